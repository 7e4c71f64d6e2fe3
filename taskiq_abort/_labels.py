"""Indexed labels: the message labels a worker writes into its registry entries (declared with
``AbortMiddleware(index_labels=...)``), so that ``abort_where`` can match running tasks and the
start check can match a start against the abort rules. Only declared labels are written: a
worker that declares none pays nothing. Values are compared as text (``str()``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from taskiq_abort.errors import AbortConfigError

Indexed = tuple[tuple[str, str], ...]


def index_names(
    names: Iterable[str], option: str = "AbortMiddleware(index_labels)"
) -> tuple[str, ...]:
    """``index_labels`` checked: label names (non-empty strings), in order, without repeats."""
    if isinstance(names, str):
        raise TypeError(f"{option}: give a tuple of label names, e.g. ({names!r},), not a string")
    seen: dict[str, None] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{option}: {name!r} is not a label name (a non-empty string)")
        seen[name] = None
    return tuple(seen)


def indexed(labels: Mapping[str, Any], names: Iterable[str]) -> Indexed:
    """The declared labels a message carries (``None`` is no label), as ``(name, text)``."""
    return tuple((name, str(value)) for name in names if (value := labels.get(name)) is not None)


def wanted(labels: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
    """``abort_where``'s ``labels`` checked against the declared ``names``: at least one pair,
    each of a declared label; :class:`AbortConfigError` names an undeclared one and the fix."""
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError("abort_where needs labels={name: value, ...}: at least one pair")
    declared = set(names)
    out: dict[str, str] = {}
    for name, value in labels.items():
        if name not in declared:
            raise AbortConfigError(
                f"label {name!r} is not indexed, so no task can be matched by it: declare it "
                f"with AbortMiddleware(..., index_labels=({name!r}, ...)) on the workers and "
                f"where you abort (declared: {sorted(declared) or 'none'})"
            )
        if value is None or isinstance(value, (dict, list, tuple, set)):
            raise ValueError(f"label {name!r}: {value!r} is not a label value (text or number)")
        out[name] = str(value)
    return out


PARENT = "abort_parent"
"""Set on a task kicked from inside a running task: the id of the task that kicked it."""
ROOT = "abort_root"
"""Set with :data:`PARENT`: the id of the tree's first task (the parent's root, or the parent)."""
CASCADE = (PARENT, ROOT)
"""Always indexed (``abort(..., cascade=True)`` matches them); only child tasks carry them."""


def stamp_parent(labels: dict[str, Any], parent_id: str, parent: Mapping[str, Any] | None) -> None:
    """Label a task kicked by the running task ``parent_id`` (whose labels are ``parent``)."""
    labels[PARENT] = parent_id
    labels[ROOT] = str((parent or {}).get(ROOT) or parent_id)
