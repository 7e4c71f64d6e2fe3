"""The package's shape: no import cycles, and a task path free of the extras and admin tools."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import taskiq_abort

PACKAGE = Path(taskiq_abort.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of imports under ``if TYPE_CHECKING:``: never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for stmt in node.body:
                skipped.update(id(n) for n in ast.walk(stmt))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, at module level or inside functions alike.

    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``. Importing
    ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``: those count too, except the
    importer's own enclosing packages (they are initialised before it runs).
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_only(tree)
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges: set[str] = set()
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step in modules and step != name and step not in own_packages:
                    edges.add(step)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), and self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "taskiq_abort.middleware" in graph
    assert "taskiq_abort._worker.side" in graph["taskiq_abort.middleware"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


# What the task path (a worker importing AbortMiddleware) must not bring in beyond what its
# dependencies import themselves: redis-py's package imports its Cluster and Sentinel modules,
# and taskiq imports fastapi and opentelemetry's API, so those are compared with that baseline.
_NOT_ON_THE_TASK_PATH = (
    "redis.cluster",
    "redis.sentinel",
    "redis.asyncio.cluster",
    "redis.asyncio.sentinel",
    "prometheus_client",
    "opentelemetry",
    "fastapi",
    "uvicorn",
    "taskiq_abort.web",
    "taskiq_abort.cli",
    "taskiq_abort.observability.metrics",
    "taskiq_abort.observability.otel",
    "taskiq_abort.observability.middleware",
    "taskiq_abort.observability.error_counts",
)

_PROBE = """
import sys
import redis.asyncio, taskiq
before = set(sys.modules)
import taskiq_abort.middleware, taskiq_abort.token
added = sorted(set(sys.modules) - before)
print("\\n".join(added))
print("prometheus_client" in sys.modules, file=sys.stderr)
"""


def test_the_task_path_imports_no_extras_and_no_admin_tools() -> None:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    added = proc.stdout.split()
    bad = [m for m in added for p in _NOT_ON_THE_TASK_PATH if m == p or m.startswith(p + ".")]
    assert bad == [], bad
    assert "taskiq_abort.middleware" in added  # the probe did import it
    assert proc.stderr.strip() == "False"  # not even through taskiq


def test_the_backend_contract_and_the_in_process_backend_import_no_redis() -> None:
    code = (
        "import sys, taskiq_abort.backends, taskiq_abort.backends.base, "
        "taskiq_abort.backends.memory\n"
        "assert 'redis' not in sys.modules, sorted(m for m in sys.modules if 'redis' in m)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
