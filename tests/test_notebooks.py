"""The teaching notebooks: paired with their sources, committed clean, and executable.

Every notebook lives twice in ``notebooks/``: ``NN_name.py`` (jupytext ``py:percent``, the
reviewable source) and ``NN_name.ipynb`` (what users open, generated with
``jupytext --to ipynb notebooks/NN_name.py``). The tests check that

* every source has its notebook and the two hold the same cells (so nobody edits one and
  forgets the other), and the ``.ipynb`` carries no outputs or execution counts;
* every notebook states its measured full-setting run time in its header;
* every notebook runs top to bottom in quick mode (``SPECNORM_NB_QUICK=1``) without a cell
  error (marker ``notebook``). Cells assert what they claim, so a wrong result fails here too.

The kernel is the interpreter running the tests: a kernel spec pointing at ``sys.executable``
is written to a temporary Jupyter path, so a stale user-level ``python3`` spec cannot send the
notebooks to another environment. The kernel's BLAS is limited to one thread: the quick setting
multiplies small matrices, and on a busy 2-core machine multi-threaded OpenBLAS was measured
several times slower than one thread.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
KERNEL_NAME = "specnorm-np-test"  # written by the kernel_path fixture (conftest.py)
CELL_TIMEOUT_SECONDS = 300


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _cells(notebook: object) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_notebooks_exist_and_are_paired() -> None:
    assert len(SOURCES) >= 6, f"expected the six teaching notebooks in {NOTEBOOK_DIR}"
    sources = {p.stem for p in SOURCES}
    notebooks = {p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")}
    assert sources == notebooks, (
        f"unpaired files: sources without .ipynb {sorted(sources - notebooks)}, "
        f".ipynb without source {sorted(notebooks - sources)}"
    )


@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_ipynb_matches_source_and_has_no_outputs(source: Path) -> None:
    ipynb = source.with_suffix(".ipynb")
    committed = nbformat.read(ipynb, as_version=4)
    for index, cell in enumerate(committed.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{ipynb.name}: cell {index} has stored outputs"
            assert cell.execution_count is None, f"{ipynb.name}: cell {index} has a count"
    expected = jupytext.read(source)
    assert _cells(committed) == _cells(expected), (
        f"{ipynb.name} is out of sync with {source.name}; regenerate it with "
        f"`jupytext --to ipynb {source.relative_to(NOTEBOOK_DIR.parent)}`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_header_states_full_setting_run_time(source: Path) -> None:
    notebook = jupytext.read(source)
    header = notebook.cells[0]
    assert header.cell_type == "markdown"
    stated = re.search(r"[Rr]un time\*{0,2}.{0,200}?\d+(\.\d+)?\s*(s|min|seconds|minutes)\b",
                       header.source, flags=re.S)
    assert stated, (
        f"{source.name}: the first cell must state the measured full-setting run time"
    )




@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_notebook_runs_in_quick_mode(
    source: Path, kernel_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("SPECNORM_NB_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the inline backend renders every figure
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(variable, "1")
    notebook = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    # One extra cell at the end reports which interpreter the kernel ran.
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT_SECONDS,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    executed = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in executed)
    reported = "".join(o.get("text", "") for o in executed[-1].outputs).strip()
    assert reported == sys.prefix, f"the kernel ran {reported!r}, not this venv {sys.prefix!r}"
    # with the solutions in place every exercise's grader says it passed (tests/test_exercises.py)
    graders = [c for c in executed if "grader" in c.metadata.get("tags", [])]
    assert len(graders) >= 3, f"{source.name}: fewer than 3 graded exercises"
    for cell in graders:
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert "passed" in text, f"{source.name}: a grader did not report success: {text!r}"
