"""What a process says when it loses Redis: one WARNING when the first of its connections
notices (the worker's registry, its control channel, an aborter's reply channel), one INFO when
the last is back, however many of them noticed. The others say it at DEBUG."""

from __future__ import annotations

import logging
import time
import weakref


class Link:
    """A connection in the outage log; one that is dropped (a closed subscription) leaves it."""


class OutageLog:
    """The process's open outages, by the connection that noticed."""

    def __init__(self) -> None:
        self._down: weakref.WeakSet[object] = weakref.WeakSet()
        self._since = 0.0

    def lost(
        self, link: object, logger: logging.Logger, msg: str, *args: object, warn: bool = False
    ) -> None:
        """``link`` failed; logged at WARNING if it is the first (or ``warn``: what it says
        changes what the worker does), else at DEBUG. Once per outage of ``link``."""
        if link in self._down:
            return
        first = not self._down
        if first:
            self._since = time.monotonic()
        self._down.add(link)
        logger.log(logging.WARNING if first or warn else logging.DEBUG, msg, *args)

    def back(self, link: object, logger: logging.Logger, what: str) -> None:
        """``link`` works again (``what`` it did about it); if it was the last one down, one
        INFO line says Redis is reachable again and how long it was not."""
        if link not in self._down:
            return
        self._down.discard(link)
        if self._down:
            logger.debug("taskiq-abort: %s", what)
        else:
            logger.info(
                "taskiq-abort: Redis reachable again after %.1f s (%s)",
                time.monotonic() - self._since,
                what,
            )


OUTAGES = OutageLog()
