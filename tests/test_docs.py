"""The examples in the docs run: module doctests and the README's in-memory example."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

MODULES = [
    "taskiq_abort.errors",
    "taskiq_abort.protocol",
    "taskiq_abort.keys",
    "taskiq_abort.names",
    "taskiq_abort.observe",
    "taskiq_abort.middleware",
    "taskiq_abort.backends.redis",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    failures, _ = doctest.testmod(importlib.import_module(name))
    assert failures == 0


def test_readme_in_memory_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    runnable = [b for b in blocks if "asyncio.run(main())" in b]
    assert runnable, "the README lost its runnable example"
    for block in runnable:
        subprocess.run([sys.executable, "-c", block], check=True, cwd=ROOT, timeout=60)
