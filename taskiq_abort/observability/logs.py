"""Quieter worker logs: an aborted task is an expected outcome, not a crash with a traceback."""

from __future__ import annotations

import logging

from taskiq_abort._worker.attempt import current_run
from taskiq_abort.errors import TaskAbortedError
from taskiq_abort.observability import events

_RECEIVER_LOGGER = "taskiq.receiver.receiver"


class AbortedTaskLogFilter(logging.Filter):
    """Turns taskiq's "Exception found while executing function." + traceback for a
    ``TaskAbortedError`` into one INFO line: the task's id, name, reason and delivery time
    (``events.applied_line``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TaskAbortedError):
            if not logging.getLogger(record.name).isEnabledFor(logging.INFO):
                return False  # demoted to INFO below a WARNING level: not written at all
            run = current_run.get()  # taskiq logs from the attempt's own task: ours is set
            name = run.entry.task_name if run is not None else "?"
            phase = events.phase_of(exc, run is not None and run.revoked)
            line = events.applied_line(exc.task_id, name, phase, exc.reason)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "%s", (line,)
            record.exc_info, record.exc_text = None, None
        return True


def install_log_filter() -> None:
    logger = logging.getLogger(_RECEIVER_LOGGER)
    if not any(isinstance(f, AbortedTaskLogFilter) for f in logger.filters):
        logger.addFilter(AbortedTaskLogFilter())
