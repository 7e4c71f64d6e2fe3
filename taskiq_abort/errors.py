"""One exception hierarchy for taskiq-abort.

Everything that goes wrong at run time is a :class:`TaskiqAbortError`: Redis refused,
unreachable or read-only, an ACL, a missing ``AbortMiddleware``, an invalid task id, an aborted
task's stored result. Programming errors in the arguments of our functions and constructors
are the builtin ``ValueError`` or ``TypeError``, raised at once, before anything is sent: a
negative ``timeout``, a ``reason`` that is not a ``str``, a bad ``prefix``, ``cancel_mode`` or
Redis URL, a ``request_ttl``, ``lease`` or ``redis_timeout`` that is not positive (Redis
backend), options given together with ``backend=``. :class:`InvalidTaskIdError` is both a
``TaskiqAbortError`` and a ``ValueError``, since task ids often come from outside the program.

:class:`TaskAbortedError` is the one that ends up *stored as a task's result*; it deliberately
subclasses plain ``Exception`` (not ``TaskiqError``) and takes only positional, JSON-simple
arguments, so it survives taskiq's exception round trip through a result backend with its
class, ``task_id`` and ``reason`` intact. Two subclasses say why a task was stopped without an
``abort()``: :class:`TaskTimeLimitExceeded` (its ``soft_time_limit``/``time_limit``) and
:class:`TaskExpired` (not started before its ``expires`` deadline).

The tree::

    TaskiqAbortError
    ├── TaskAbortedError            stored as an aborted task's result
    │   ├── TaskTimeLimitExceeded   ... stopped at its time limit
    │   └── TaskExpired             ... refused at its start: past its deadline
    ├── AbortConfigError            (also RuntimeError)
    ├── InvalidTaskIdError          (also ValueError)
    └── AbortBackendError
        ├── AbortBackendUnavailableError   (also ConnectionError)
        └── AbortPermissionError           (also PermissionError)
    TaskInterrupted (a BaseException, raised in a sync body's thread)
"""

from __future__ import annotations


class TaskiqAbortError(Exception):
    """Base class of every run-time error of taskiq-abort (argument checks raise the builtin
    ``ValueError``/``TypeError``)."""


class TaskAbortedError(TaskiqAbortError):
    """The task was aborted. Stored as the task's result error.

    >>> err = TaskAbortedError("4f2a", "user pressed stop")
    >>> err.task_id, err.reason
    ('4f2a', 'user pressed stop')
    >>> str(err)
    'task 4f2a was aborted: user pressed stop'
    """

    def __init__(self, task_id: str = "", reason: str | None = None) -> None:
        # Positional args only: taskiq rebuilds exceptions as ``cls(*args)``.
        super().__init__(task_id, reason)
        self.task_id = task_id
        self.reason = reason

    def __str__(self) -> str:
        suffix = f": {self.reason}" if self.reason else ""
        return f"task {self.task_id} was aborted{suffix}"


class TaskTimeLimitExceeded(TaskAbortedError):
    """The task ran past a time limit (``soft_time_limit``/``time_limit``): stored as its result.

    >>> err = TaskTimeLimitExceeded("4f2a", "hard time limit (10 s) exceeded", 10.0, False)
    >>> err.limit, err.soft, isinstance(err, TaskAbortedError)
    (10.0, False, True)
    >>> str(err)
    'task 4f2a was stopped: hard time limit (10 s) exceeded'
    """

    def __init__(
        self, task_id: str = "", reason: str | None = None, limit: float = 0.0, soft: bool = False
    ) -> None:
        super().__init__(task_id, reason)
        self.args = (task_id, reason, limit, soft)
        self.limit = limit
        """The limit that stopped it, in seconds from the body's start."""
        self.soft = soft
        """``True``: the body stopped on its own (through its token) after its soft limit;
        ``False``: its hard limit stopped it."""

    def __str__(self) -> str:
        return f"task {self.task_id} was stopped: {self.reason}"


class TaskExpired(TaskAbortedError):
    """The task had not started by its ``expires`` deadline: refused at its start, it never
    ran. Stored as its result.

    >>> err = TaskExpired("4f2a", "expired 2.5 s before it started", 1733000000.0)
    >>> err.expires_at, isinstance(err, TaskAbortedError)
    (1733000000.0, True)
    """

    def __init__(
        self, task_id: str = "", reason: str | None = None, expires_at: float = 0.0
    ) -> None:
        super().__init__(task_id, reason)
        self.args = (task_id, reason, expires_at)
        self.expires_at = expires_at
        """The deadline, seconds since the epoch."""

    def __str__(self) -> str:
        return f"task {self.task_id} never ran: {self.reason}"


class AbortConfigError(TaskiqAbortError, RuntimeError):
    """taskiq-abort is not set up the way an operation needs (e.g. no AbortMiddleware)."""


class InvalidTaskIdError(TaskiqAbortError, ValueError):
    """A task id that cannot be a TaskIQ task id (empty, too long, control characters)."""


class AbortBackendError(TaskiqAbortError):
    """The abort control plane (Redis) failed: refused, unreachable, or answered an error."""


class AbortBackendUnavailableError(AbortBackendError, ConnectionError):
    """The abort control plane (Redis) could not be reached within the time allowed."""


class AbortPermissionError(AbortBackendError, PermissionError):
    """Redis refused a command (ACL): the user lacks rights on the abort keys or channel."""


class TaskInterrupted(BaseException):
    """Raised inside a sync task body's thread by an abort, with
    ``AbortMiddleware(interrupt_threads=True)``. A ``BaseException``, like ``KeyboardInterrupt``,
    so that the body's ``except Exception`` handlers let it through; its ``finally`` blocks run.
    Let through, the task's stored result is a :class:`TaskAbortedError`; a body that catches
    it and returns has its own result stored, and its abort reports ``finished``."""
