"""Quieter worker logs: an aborted task is an expected outcome, not a crash with a traceback."""

from __future__ import annotations

import logging

from taskiq_abort.errors import TaskAbortedError

_RECEIVER_LOGGER = "taskiq.receiver.receiver"


class AbortedTaskLogFilter(logging.Filter):
    """Drops taskiq's "Exception found while executing function." + traceback for a
    ``TaskAbortedError``: ``AbortMiddleware.on_error`` logs the abort instead, as one INFO line
    with the task's id, name, reason and delivery time (``taskiq_abort.observe``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, TaskAbortedError)


def install_log_filter() -> None:
    logger = logging.getLogger(_RECEIVER_LOGGER)
    if not any(isinstance(f, AbortedTaskLogFilter) for f in logger.filters):
        logger.addFilter(AbortedTaskLogFilter())
