"""Admin CLI (work in progress)."""

from __future__ import annotations

from collections.abc import Sequence

from taskiq.abc.cmd import TaskiqCMD


class AbortCMD(TaskiqCMD):
    """``taskiq abort``."""

    short_help = "Abort tasks, list running tasks"

    def exec(self, args: Sequence[str]) -> int | None:
        return main(list(args))


def main(argv: list[str] | None = None) -> int:
    return 2
