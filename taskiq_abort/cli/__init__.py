"""``taskiq-abort`` (and ``taskiq abort``): abort, list and inspect tasks from a shell.

Built on argparse, like TaskIQ's own CLI, so it adds no dependency to the install. taskiq itself
is imported only where a command needs it (``--broker``, the ``taskiq abort`` plugin class), so
``taskiq-abort ls --redis-url ...`` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskiq_abort.cli.plugin import AbortCMD

__all__ = ["AbortCMD", "main"]


def main(argv: Sequence[str] | None = None, *, prog: str = "taskiq-abort") -> int:
    """The ``taskiq-abort`` command; returns its exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not any(a == "web" or a.startswith("--broker") for a in args):
        # redis-py 8 imports OpenTelemetry's metrics SDK when it is installed (a fifth of this
        # command's start-up) though nothing here records metrics with it: a command that
        # loads no application code runs as if it were absent. Only in this process, and
        # never for --broker or `web`, which load the user's app (it may use the SDK).
        sys.modules.setdefault("opentelemetry.sdk.metrics", None)  # type: ignore[arg-type]
    from taskiq_abort.cli.main import main as run

    return run(args, prog=prog)


def __getattr__(name: str) -> Any:
    """``AbortCMD`` subclasses taskiq's ``TaskiqCMD``: import it (and taskiq) only when asked."""
    if name == "AbortCMD":
        from taskiq_abort.cli.plugin import AbortCMD

        return AbortCMD
    raise AttributeError(f"module 'taskiq_abort.cli' has no attribute {name!r}")
