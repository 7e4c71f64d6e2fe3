"""What a task name typed by a user means among the names of the running tasks.

taskiq names a task ``module:function`` unless ``@broker.task(task_name=...)`` says otherwise,
while people (and these docs) say ``crunch``. A bare name stands for the one running
``module:crunch``; two modules with a ``crunch`` make it ambiguous, and that is said, never
guessed.
"""

from __future__ import annotations

from collections.abc import Iterable


class AmbiguousTaskNameError(ValueError):
    """A bare task name matches running tasks of several ``module:function`` names."""

    def __init__(self, wanted: str, candidates: Iterable[str]) -> None:
        self.candidates = sorted(candidates)
        super().__init__(
            f"task name {wanted!r} matches running tasks named "
            f"{', '.join(map(repr, self.candidates))}: give the full name"
        )


def resolve_task_name(wanted: str, running: Iterable[str]) -> str | None:
    """The running tasks' name that ``wanted`` stands for, or ``None`` when none runs.

    >>> resolve_task_name("crunch", ["tasks:crunch", "tasks:other"])
    'tasks:crunch'
    >>> resolve_task_name("tasks:crunch", ["tasks:crunch", "more:crunch"])
    'tasks:crunch'
    >>> resolve_task_name("crunch", ["crunch", "tasks:crunch"])
    'crunch'
    >>> print(resolve_task_name("crunch", ["tasks:other"]))
    None
    >>> resolve_task_name("crunch", ["a.tasks:crunch", "b:crunch"])
    ... # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    AmbiguousTaskNameError: ... named 'a.tasks:crunch', 'b:crunch': give the full name

    :raises AmbiguousTaskNameError: ``wanted`` is bare and several modules have that function.
    """
    names = set(running)
    if wanted in names:
        return wanted
    if ":" in wanted:
        return None
    candidates = {name for name in names if name.rpartition(":")[2] == wanted and ":" in name}
    if len(candidates) > 1:
        raise AmbiguousTaskNameError(wanted, candidates)
    return next(iter(candidates), None)
