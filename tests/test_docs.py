"""The examples in the docs run: module doctests, and every code block of README.md and docs/
either runs as printed, is an excerpt of an example that tests/test_examples.py runs, or is
marked as not run (with why)."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

MODULES = [
    "taskiq_abort.errors",
    "taskiq_abort._wire.protocol",
    "taskiq_abort._wire.keys",
    "taskiq_abort._read.names",
    "taskiq_abort.observability.events",
    "taskiq_abort.middleware",
    "taskiq_abort.backends.redis",
]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OUTPUT = {"text", "console", "json"}  # what a command printed: shown, not run
MARK = re.compile(r"<!-- (not run: .+|excerpt of (examples/\w+\.py)) -->")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    mark: str | None
    code: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    lines = page.read_text().split("\n")
    found, start = [], None
    for number, line in enumerate(lines):
        if not line.startswith("```"):
            continue
        if start is None:
            start = number
            continue
        before = lines[start - 1].strip() if start else ""
        found.append(
            Block(
                page,
                start + 1,
                lines[start][3:].strip(),
                before if before.startswith("<!--") else None,
                "\n".join(lines[start + 1 : number]) + "\n",
            )
        )
        start = None
    assert start is None, f"{page}:{start}: a code block is never closed"
    return found


BLOCKS = [block for page in PAGES for block in code_blocks(page)]
RUN = [b for b in BLOCKS if b.lang == "python" and b.mark is None]
EXCERPTS = [b for b in BLOCKS if b.mark and b.mark.startswith("<!-- excerpt")]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    failures, _ = doctest.testmod(importlib.import_module(name))
    assert failures == 0


def test_every_code_block_is_run_or_marked() -> None:
    unmarked = []
    for block in BLOCKS:
        if block.lang in OUTPUT:
            continue
        if not block.lang:
            unmarked.append(f"{block}: no language (text, console or json for output)")
        elif block.mark is None and block.lang != "python":
            unmarked.append(f"{block}: a {block.lang} block needs <!-- not run: why -->")
        elif block.mark is not None and not MARK.fullmatch(block.mark):
            unmarked.append(f"{block}: unknown mark {block.mark!r}")
    assert unmarked == []
    assert RUN and EXCERPTS, "the docs lost their runnable examples"


@pytest.mark.parametrize("block", RUN, ids=str)
def test_a_python_block_runs_as_printed(block: Block) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", block.code],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{block}:\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("block", EXCERPTS, ids=str)
def test_an_excerpt_is_the_example_that_runs(block: Block) -> None:
    """Its lines are the example's, in order (``...`` stands for lines left out), and
    tests/test_examples.py runs that example."""
    match = MARK.fullmatch(block.mark or "")
    assert match is not None
    example = match.group(2)
    source = iter((ROOT / example).read_text().split("\n"))
    for line in block.code.split("\n"):
        if line.strip() in ("", "..."):
            continue
        assert any(line == s for s in source), f"{block}: {line!r} is not in {example}, in order"
    module = example.removesuffix(".py").replace("/", ".")
    assert module in (ROOT / "tests" / "test_examples.py").read_text(), f"nothing runs {module}"
