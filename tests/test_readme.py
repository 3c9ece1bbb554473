"""The README is the front door: its Python examples must run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3, "the README should show runnable examples"
    namespace: dict = {}
    for block in blocks:  # blocks share a namespace, like a reader's session
        exec(compile(block, str(README), "exec"), namespace)


def test_readme_quick_start_matches_makefile() -> None:
    text = README.read_text(encoding="utf-8")
    makefile = (README.parent / "Makefile").read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert f"make {target}" in text
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile lacks a {target} target"
    assert "make test" in ci, ".ci/run must run the README's test command"
