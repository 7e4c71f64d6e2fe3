"""``taskiq abort ...``: the admin CLI as a TaskIQ CLI plugin (imported only by ``taskiq``)."""

from __future__ import annotations

from collections.abc import Sequence

from taskiq.abc.cmd import TaskiqCMD

from taskiq_abort.cli.main import main


class AbortCMD(TaskiqCMD):
    """``taskiq abort ...``: the same commands as ``taskiq-abort``, as a TaskIQ CLI plugin."""

    short_help = "Abort tasks, list running tasks"

    def exec(self, args: Sequence[str]) -> int | None:
        return main(list(args), prog="taskiq abort")
