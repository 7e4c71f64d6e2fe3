"""taskiq's result backends, as the aborter, the progress reports, the CLI and the web API see
them: the one place that knows ``DummyResultBackend`` stores nothing.

taskiq is imported only once a result backend is at hand (it comes from a taskiq broker, so
taskiq is loaded by then): ``taskiq-abort ID`` with a bare Redis URL never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskiq_abort.errors import TaskAbortedError

if TYPE_CHECKING:
    from taskiq import AsyncResultBackend, TaskiqResult


def stored_results(backend: object) -> AsyncResultBackend[Any] | None:
    """``backend`` if it is a result backend that stores results, else ``None`` (no backend,
    something else, or taskiq's ``DummyResultBackend``)."""
    if backend is None:
        return None
    from taskiq import AsyncResultBackend
    from taskiq.result_backends.dummy import DummyResultBackend

    if isinstance(backend, AsyncResultBackend) and not isinstance(backend, DummyResultBackend):
        return backend
    return None


def aborted_result(task_id: str, reason: str | None) -> TaskiqResult[Any]:
    """The result stored for an aborted task."""
    from taskiq import TaskiqResult

    return TaskiqResult(
        is_err=True,
        return_value=None,
        execution_time=0.0,
        error=TaskAbortedError(task_id, reason),
        labels={},
    )
