"""Time limits and expiry (and taskiq's ``delay``), as labels: what a task carries, checked where
it is kicked and read where it runs.

- ``soft_time_limit`` / ``time_limit`` (seconds from the body's start): at the soft limit the
  task's token is set, as ``abort(grace=...)`` does; at the hard limit the body is cancelled
  (or its thread interrupted). ``AbortMiddleware(soft_time_limit=..., time_limit=...)`` sets
  them for tasks without the labels. The timers live on the attempt (``attempt.RunningTask``).
- ``expires`` (seconds from the kick): the kicking process turns it into ``expires_at`` (seconds
  since the epoch, on its best estimate of the Redis clock) before the message is sent, so that
  a retry or a redelivery keeps the first deadline. The start check judges it on the Redis
  clock (``lua/sync.lua``), in the call it makes anyway.
- ``retry_on_time_limit=True`` lets retry middlewares retry a task stopped by its time limit
  (every other abort is never retried).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SOFT_LABEL = "soft_time_limit"
HARD_LABEL = "time_limit"
EXPIRES_LABEL = "expires"
EXPIRES_AT_LABEL = "expires_at"
RETRY_LABEL = "retry_on_time_limit"


@dataclass(frozen=True)
class TimeLimits:
    """A task's limits, seconds from its body's start; at least one is set."""

    soft: float | None = None
    hard: float | None = None


def given(value: object) -> object:
    """A label's value, or ``None`` for none: taskiq turns label values into strings, so
    ``with_labels(expires=None)`` arrives as ``"None"``."""
    return None if value is None or value == "None" or value == "" else value


def seconds(value: object, what: str) -> float:
    """A positive, finite number of seconds (a label may arrive as a string), else ValueError
    naming ``what``."""
    if isinstance(value, bool):
        raise ValueError(f"{what}={value!r}: must be a positive number of seconds")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what}={value!r}: must be a positive number of seconds") from None
    if not (0 < number < math.inf):
        raise ValueError(f"{what}={value!r}: must be a positive number of seconds")
    return number


def optional_seconds(value: object, what: str) -> float | None:
    value = given(value)
    return None if value is None else seconds(value, what)


def check_limits(soft: float | None, hard: float | None, where: str) -> TimeLimits | None:
    """The limits, or ``None`` without any; a soft limit at or past the hard one is an error
    (it would never come first)."""
    if soft is None and hard is None:
        return None
    if soft is not None and hard is not None and soft >= hard:
        raise ValueError(
            f"{where}: soft_time_limit ({soft:g} s) must be below time_limit ({hard:g} s)"
        )
    return TimeLimits(soft, hard)


_PARSED: dict[tuple[object, object, TimeLimits | None], TimeLimits | None] = {}
_PARSED_MAX = 1024  # label values seen: a task's limits are usually the same on every kick


def limits_of(labels: Mapping[str, Any], default: TimeLimits | None) -> TimeLimits | None:
    """A task's limits: its labels, each one falling back to the middleware's default."""
    soft_label, hard_label = labels.get(SOFT_LABEL), labels.get(HARD_LABEL)
    if soft_label is None and hard_label is None:
        return default  # the common case: no label, no parsing
    key = (soft_label, hard_label, default)
    try:
        return _PARSED[key]
    except (KeyError, TypeError):  # not seen yet, or a value that cannot be a key
        pass
    limits = _parse(soft_label, hard_label, default)  # a bad value raises: never kept
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    with contextlib.suppress(TypeError):
        _PARSED[key] = limits
    return limits


def _parse(soft_label: object, hard_label: object, default: TimeLimits | None) -> TimeLimits | None:
    soft = optional_seconds(soft_label, SOFT_LABEL)
    hard = optional_seconds(hard_label, HARD_LABEL)
    if default is not None:
        soft_given, hard_given = soft is not None, hard is not None
        soft = soft if soft_given else default.soft
        hard = hard if hard_given else default.hard
        if soft is not None and hard is not None and soft >= hard:
            # A label and the default's other limit disagree: the hard limit stands (as in
            # Celery, a soft limit past the hard one never comes first), the soft one goes.
            soft = soft if soft_given and hard_given else None
    return check_limits(soft, hard, "labels")


def _number(raw: object) -> float | None:
    """A label's finite number, if it has one."""
    raw = given(raw)
    if raw is None or isinstance(raw, bool):
        return None
    try:
        number = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def deadline_of(labels: Mapping[str, Any]) -> float | None:
    """The ``expires_at`` label (seconds since the epoch), if the task has a valid one."""
    return _number(labels.get(EXPIRES_AT_LABEL))


def delay_of(labels: Mapping[str, Any]) -> float | None:
    """The seconds of taskiq's ``delay`` label (brokers that honour it, such as
    taskiq-aio-pika, deliver the task that much later), if it has a valid one."""
    return _number(labels.get("delay"))


def stamp_deadline(labels: dict[str, Any], now: float) -> None:
    """At the kick: check the limit labels and turn ``expires`` into ``expires_at`` (``now`` on
    the Redis clock, as the kicking process knows it). A message that has ``expires_at``
    already (a retry, a re-kick of the same message) keeps it."""
    limits_of(labels, None)  # a bad label is the kicker's error, raised before anything is sent
    expires, stamped = given(labels.get(EXPIRES_LABEL)), given(labels.get(EXPIRES_AT_LABEL))
    if expires is not None and stamped is None:
        labels[EXPIRES_AT_LABEL] = round(now + seconds(expires, EXPIRES_LABEL), 3)
    elif stamped is not None and _number(stamped) is None:
        raise ValueError(
            f"{EXPIRES_AT_LABEL}={labels[EXPIRES_AT_LABEL]!r}: must be seconds since the epoch"
        )


def retry_allowed(labels: Mapping[str, Any] | None) -> bool:
    """Whether the task opted in to retries after its time limit stopped it."""
    raw = None if labels is None else labels.get(RETRY_LABEL)
    return raw is True or (isinstance(raw, str) and raw.lower() == "true")


def soft_reason(limit: float) -> str:
    return f"soft time limit ({limit:g} s) exceeded"


def hard_reason(limit: float) -> str:
    return f"hard time limit ({limit:g} s) exceeded"


TOKEN_ONLY = (
    "; a sync task without AbortMiddleware(interrupt_threads=True) can only be stopped "
    "through its token"
)
