"""Interrupting a sync task body in its thread (``AbortMiddleware(interrupt_threads=True)``).

CPython can raise an exception in another thread (``PyThreadState_SetAsyncExc``, the technique
dramatiq-abort uses): it lands at that thread's next Python bytecode, never inside a blocking C
call (``time.sleep()``, a socket read), which it waits out. The danger is an exception that
lands late, after the body returned, in taskiq's executor code or in the next task the pool
thread runs. A lock makes "send" and "the body is over" exclusive, and an exception sent but
not landed yet is taken back (``SetAsyncExc(thread, NULL)``) before the thread leaves the body.
"""

from __future__ import annotations

import ctypes
import threading

from taskiq_abort.errors import TaskInterrupted

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


def _send(ident: int, exc: type[BaseException] | None) -> int:
    # ``None`` is passed as NULL: it clears an exception that has not landed yet.
    obj = ctypes.py_object(exc) if exc is not None else ctypes.py_object()
    return int(_set_async_exc(ident, obj))


class ThreadInterrupt:
    """The thread running one sync task body; ``interrupt()`` may be called from any thread."""

    __slots__ = ("_lock", "ident", "open", "sent")

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self._lock = threading.Lock()
        self.open = True  # the body runs
        self.sent = False  # a TaskInterrupted was sent (at most one, ever)

    def interrupt(self) -> bool:
        """Raise :class:`TaskInterrupted` in the body's thread if the body still runs; ``True``
        once one was sent."""
        with self._lock:
            if self.open and not self.sent:
                self.sent = _send(self.ident, TaskInterrupted) == 1
            return self.sent

    def close(self) -> None:
        """Called by the body's thread as it leaves the body: nothing is sent from now on, and
        an exception sent but not yet raised is taken back. If the pending one lands while
        this runs, the caller catches it and calls ``close`` again (nothing is pending then)."""
        with self._lock:
            self.open = False
            if self.sent:
                _send(self.ident, None)
