"""Running the ASGI app in one or more processes.

With several workers each process gets its own listening socket on the same port
(``SO_REUSEPORT``), so the kernel spreads new connections evenly over the processes. With one
shared socket (uvicorn's own multi-process mode) long-lived keep-alive connections pile up on
whichever process happens to accept first, and that process's CPU becomes the ceiling.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from types import FrameType

import uvicorn

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


def _config(log_level: str) -> uvicorn.Config:
    return uvicorn.Config(_APP, factory=True, log_level=log_level, access_log=False)


def _worker(host: str, port: int, log_level: str) -> None:
    sock = _listen(host, port, reuse_port=True)
    uvicorn.Server(_config(log_level)).run(sockets=[sock])


def serve(host: str, port: int, *, workers: int = 1, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; several workers share the port through SO_REUSEPORT."""
    if workers <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(
            _APP,
            factory=True,
            host=host,
            port=port,
            workers=max(workers, 1),
            log_level=log_level,
            access_log=False,
        )
        return
    context = multiprocessing.get_context("spawn")
    # Bind once in the parent first: a port in use fails here, loudly, before any worker starts.
    _listen(host, port, reuse_port=True).close()
    processes = [
        context.Process(target=_worker, args=(host, port, log_level)) for _ in range(workers)
    ]
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
                processes[index] = context.Process(target=_worker, args=(host, port, log_level))
                processes[index].start()
        time.sleep(0.5)
    for process in processes:
        process.join(timeout=30)
