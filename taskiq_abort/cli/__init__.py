"""``taskiq-abort`` (and ``taskiq abort``): abort, list and inspect tasks from a shell.

Built on argparse, like TaskIQ's own CLI, so it adds no dependency to the install. taskiq itself
is imported only where a command needs it (``--broker``, the ``taskiq abort`` plugin class), so
``taskiq-abort ls --redis-url ...`` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskiq_abort.cli.main import main

if TYPE_CHECKING:
    from taskiq_abort.cli.plugin import AbortCMD

__all__ = ["AbortCMD", "main"]


def __getattr__(name: str) -> Any:
    """``AbortCMD`` subclasses taskiq's ``TaskiqCMD``: import it (and taskiq) only when asked."""
    if name == "AbortCMD":
        from taskiq_abort.cli.plugin import AbortCMD

        return AbortCMD
    raise AttributeError(f"module 'taskiq_abort.cli' has no attribute {name!r}")
