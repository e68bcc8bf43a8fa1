"""When cached decisions go stale: one counter for the tuned tables and the device backends in
force. Caches key on ``value``; ``bump()`` (a table loaded or forgotten, a backend swapped)
makes them miss, and tells the caches that cannot key on it (``on_bump``)."""

import threading
from typing import Callable, List

value = 0
_listeners: List[Callable[[], None]] = []
_lock = threading.Lock()


def bump() -> None:
    """The tables or backends in force may have changed."""
    global value
    with _lock:
        value += 1
        listeners = list(_listeners)
    for listener in listeners:
        listener()


def on_bump(listener: Callable[[], None]) -> None:
    """Call ``listener()`` after every ``bump()``."""
    with _lock:
        _listeners.append(listener)
