"""Helpers for the background threads of the workers (notification delivery, exports)."""

from __future__ import annotations

import threading
import time


def stop_threads(
    threads: list[threading.Thread],
    stopping: threading.Event,
    wakeup: threading.Event,
    timeout: float,
) -> None:
    """Tell the threads to stop (``stopping``, and ``wakeup`` for those asleep), then wait for
    them, at most ``timeout`` seconds in all; ``threads`` is emptied."""
    stopping.set()
    wakeup.set()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    threads.clear()
