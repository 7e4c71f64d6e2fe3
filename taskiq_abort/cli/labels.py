"""``--label NAME=VALUE``: parsing it, and matching a running task's indexed labels."""

from __future__ import annotations

from collections.abc import Sequence

from taskiq_abort.cli.connect import CLIError
from taskiq_abort.outcome import RunningEntry


def parse_labels(items: Sequence[str] | None) -> dict[str, str]:
    """``["tenant=acme", ...]`` as a dict; :class:`CLIError` for an item without ``=``.

    >>> parse_labels(["tenant=acme", "user=7=x"])
    {'tenant': 'acme', 'user': '7=x'}
    """
    labels: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CLIError(f"--label {item!r}: expected NAME=VALUE, e.g. --label tenant=acme")
        labels[name] = value
    return labels


def has_labels(entry: RunningEntry, labels: dict[str, str] | None) -> bool:
    """Whether the running task carries every pair of ``labels`` (its indexed ones)."""
    have = entry.label_map
    return all(have.get(name) == value for name, value in (labels or {}).items())


def describe(labels: dict[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in labels.items())
