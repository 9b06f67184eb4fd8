"""Running the ASGI app in one or more processes.

With several workers each process gets its own listening socket on the same port
(``SO_REUSEPORT``), so the kernel spreads new connections evenly over the processes. With one
shared socket (uvicorn's own multi-process mode) long-lived keep-alive connections pile up on
whichever process happens to accept first, and that process's CPU becomes the ceiling.

Stopping: on SIGTERM or SIGINT uvicorn stops accepting connections, lets the requests in flight
finish and then runs the application's shutdown; with several workers the parent passes the
signal on to each of them and waits for them.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import uvicorn

from service.runtime import logs
from service.runtime.metrics import MULTIPROC_ENV

log = logging.getLogger(__name__)

_APP = "service.app:create_app"


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _exit_zero(_signum: int, _frame: FrameType | None) -> None:
    logging.shutdown()  # flush the log handlers: os._exit skips the interpreter's clean-up
    # ... which for a loaded app is seconds of CPU (freeing every object) to no purpose.
    os._exit(0)


def _exit_zero_after_shutdown() -> None:
    # Once uvicorn has shut down gracefully it raises the signal again under the handler that
    # was there before it started, by default death by signal (status 143 for SIGTERM). A
    # server that stopped cleanly when asked exits 0, as process managers expect.
    signal.signal(signal.SIGTERM, _exit_zero)
    signal.signal(signal.SIGINT, _exit_zero)


def _config(log_level: str, forwarded_allow_ips: str) -> uvicorn.Config:
    # log_config=None: uvicorn's loggers propagate to the root handler of service.runtime.logs.
    return uvicorn.Config(
        _APP,
        factory=True,
        log_level=log_level,
        access_log=False,
        log_config=None,
        forwarded_allow_ips=forwarded_allow_ips,
    )


def freeze_startup_heap() -> None:
    """Exempt everything built at start-up from the cyclic garbage collector.

    The FHIR models, validators and routes are ~200,000 long-lived objects that every full
    collection would scan again; frozen, they cost nothing (in-process measurement: GC time
    over 3,300 creates 301 ms -> 19 ms). Call once the app is built, before serving.
    """
    gc.collect()
    gc.freeze()


def _worker(
    host: str, port: int, log_level: str, log_format: logs.LogFormat, forwarded_allow_ips: str
) -> None:
    logs.configure(log_format, log_level.upper())  # a spawned process starts unconfigured
    _exit_zero_after_shutdown()
    config = _config(log_level, forwarded_allow_ips)
    # Build the app before listening: the kernel queues connections for a listening socket,
    # and those would be lost if this worker were stopped while still starting.
    config.load()
    freeze_startup_heap()
    sock = _listen(host, port, reuse_port=True)
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def _shared_metrics_dir() -> Iterator[None]:
    """Point the workers' Prometheus multiprocess mode at an empty directory (see
    :mod:`service.runtime.metrics`): the one in ``PROMETHEUS_MULTIPROC_DIR``, emptied, or a new
    temporary one, removed afterwards."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        # Files of an earlier run would add its counts to this one's.
        for stale in Path(configured).glob("*.db"):
            stale.unlink()
        yield
        return
    path = tempfile.mkdtemp(prefix="telemon-metrics-")
    os.environ[MULTIPROC_ENV] = path  # inherited by the workers spawned from here on
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)
        del os.environ[MULTIPROC_ENV]


def default_workers() -> int:
    """One worker per CPU core this process may run on (its CPU affinity: ``taskset``, a
    container's ``--cpuset-cpus``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def serve(
    host: str,
    port: int,
    *,
    workers: int = 1,
    log_level: str = "info",
    log_format: logs.LogFormat = "json",
    forwarded_allow_ips: str = "127.0.0.1,::1",
) -> None:
    """Serve until SIGINT/SIGTERM; several workers share the port through SO_REUSEPORT.

    The caller sets up this process's logging (:func:`service.runtime.logs.configure`); worker
    processes set up their own with ``log_format``. ``forwarded_allow_ips``: the proxies whose
    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed (the client's address counts in
    the rate limits and the audit trail).
    """
    if workers <= 1:
        _exit_zero_after_shutdown()
        config = uvicorn.Config(
            _APP,
            factory=True,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            log_config=None,
            forwarded_allow_ips=forwarded_allow_ips,
        )
        config.load()
        freeze_startup_heap()
        uvicorn.Server(config).run()
        return
    with _shared_metrics_dir():
        if hasattr(socket, "SO_REUSEPORT"):
            _serve_workers(host, port, workers, log_level, log_format, forwarded_allow_ips)
        else:  # uvicorn's workers log in its own format (they do not run service.runtime.logs)
            uvicorn.run(
                _APP,
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level=log_level,
                access_log=False,
                forwarded_allow_ips=forwarded_allow_ips,
            )


def _serve_workers(
    host: str,
    port: int,
    workers: int,
    log_level: str,
    log_format: logs.LogFormat,
    forwarded_allow_ips: str,
) -> None:
    context = multiprocessing.get_context("spawn")
    # Bind once in the parent first: a port in use fails here, loudly, before any worker starts.
    _listen(host, port, reuse_port=True).close()
    args = (host, port, log_level, log_format, forwarded_allow_ips)
    processes = [context.Process(target=_worker, args=args) for _ in range(workers)]
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes in-flight requests

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for process in processes:
        process.start()
    log.info("serving on http://%s:%s with %s worker processes", host, port, workers)
    while not stopping:
        for index, process in enumerate(processes):
            if not process.is_alive() and not stopping:
                log.warning(
                    "worker %s exited (code %s); starting a new one", process.pid, process.exitcode
                )
                processes[index] = context.Process(target=_worker, args=args)
                processes[index].start()
        time.sleep(0.5)
    for process in processes:
        process.join(timeout=30)
