"""The public names: ``taskiq_abort.__all__`` is the export list, and it holds (as httpx checks)."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import taskiq_abort


def test_every_exported_name_exists_and_is_ours() -> None:
    for name in taskiq_abort.__all__:
        value = getattr(taskiq_abort, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        assert value.__module__.startswith("taskiq_abort."), (name, value.__module__)


def test_nothing_public_is_left_out() -> None:
    """Every public class or function of ours that the package hands out is exported."""
    public = {
        name
        for name in dir(taskiq_abort)
        if not name.startswith("_")
        and not isinstance(getattr(taskiq_abort, name), types.ModuleType)
        and str(getattr(getattr(taskiq_abort, name), "__module__", "")).startswith("taskiq_abort")
    }
    assert public == {name for name in taskiq_abort.__all__ if not name.startswith("_")}


def test_the_lazy_table_and_what_type_checkers_see_agree_with_all() -> None:
    """The names imported on first use, from ``_LAZY``, are those the ``TYPE_CHECKING`` block
    imports, from the same modules; with the errors (imported at once) they are ``__all__``."""
    tree = ast.parse(Path(taskiq_abort.__file__).read_text())
    checked: dict[str, str] = {}
    eager: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module is not None
                checked.update((alias.name, stmt.module) for alias in stmt.names)
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "taskiq_abort.errors":
            eager.update(alias.name for alias in stmt.names)
    lazy = {name: module for module, names in taskiq_abort._LAZY.items() for name in names}
    assert checked == lazy
    assert sorted({*eager, *lazy, "__version__"}) == sorted(taskiq_abort.__all__)


def test_the_export_list_is_sorted_and_without_repeats() -> None:
    assert list(taskiq_abort.__all__) == sorted(set(taskiq_abort.__all__))
