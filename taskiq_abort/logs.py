"""Quieter worker logs: an aborted task is an expected outcome, not a crash with a traceback."""

from __future__ import annotations

import logging

from taskiq_abort.errors import TaskAbortedError

_RECEIVER_LOGGER = "taskiq.receiver.receiver"


class AbortedTaskLogFilter(logging.Filter):
    """Turns taskiq's "Exception found while executing function." + traceback for a
    ``TaskAbortedError`` into one INFO line naming the task and the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TaskAbortedError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "%s", (str(exc),)
            record.exc_info, record.exc_text = None, None
        return True


def install_log_filter() -> None:
    logger = logging.getLogger(_RECEIVER_LOGGER)
    if not any(isinstance(f, AbortedTaskLogFilter) for f in logger.filters):
        logger.addFilter(AbortedTaskLogFilter())
