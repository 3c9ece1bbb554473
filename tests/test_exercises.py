"""The notebooks' exercises: 3-5 per notebook, solutions removable, graders that can fail.

Each exercise is a markdown cell with an ``{exercise}`` directive, a code cell tagged
``solution`` holding the reference solution between ``### BEGIN SOLUTION`` / ``### END
SOLUTION``, and the next code cell, tagged ``grader``, that checks it. ``docs/make_exercises.py``
(``make exercises``) writes the student copies. With the solutions every grader passes (the
quick-mode run in ``test_notebooks.py`` executes them and checks that each says "passed"); here
the student copy is executed and every grader must fail, with an AssertionError that names the
exercise, while every other cell still runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
KERNEL_NAME = "specnorm-np-test"  # written by the kernel_path fixture (conftest.py)

_spec = importlib.util.spec_from_file_location("make_exercises",
                                               ROOT / "docs" / "make_exercises.py")
make_exercises = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_exercises)


def _tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def test_strip_solutions_keeps_indentation_and_the_rest() -> None:
    source = ("def f(x):\n    y = None\n    ### BEGIN SOLUTION\n    y = 2 * x\n"
              "    ### END SOLUTION\n    return y")
    stripped = make_exercises.strip_solutions(source)
    assert stripped == "def f(x):\n    y = None\n    # YOUR CODE HERE\n    return y"
    namespace: dict = {}
    exec(stripped, namespace)
    assert namespace["f"](3) is None  # the student copy returns its placeholder


@pytest.mark.parametrize("bad", [
    "### BEGIN SOLUTION\nx = 1",
    "x = 1\n### END SOLUTION",
    "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
])
def test_strip_solutions_rejects_unbalanced_markers(bad: str) -> None:
    with pytest.raises(ValueError, match="line"):
        make_exercises.strip_solutions(bad, "test")


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_three_to_five_exercises_each_with_a_grader(source: Path) -> None:
    cells = jupytext.read(source).cells
    solutions = [i for i, c in enumerate(cells) if "solution" in _tags(c)]
    statements = [c for c in cells if c.cell_type == "markdown" and "```{exercise}" in c.source]
    assert 3 <= len(solutions) <= 5, f"{source.name}: {len(solutions)} exercises"
    assert len(statements) == len(solutions), f"{source.name}: statements vs solutions"
    for index in solutions:
        cell = cells[index]
        assert cell.cell_type == "code" and make_exercises.has_solution(cell.source), (
            f"{source.name} cell {index}: a solution cell needs the BEGIN/END markers")
        assert "hide-input" in _tags(cell), f"{source.name} cell {index}: not collapsed in the book"
        following = next(c for c in cells[index + 1:] if c.cell_type == "code")
        assert "grader" in _tags(following), f"{source.name} cell {index}: no grader after it"
    assert cells[-1].cell_type == "markdown" and cells[-1].source.startswith("## Summary"), (
        f"{source.name}: the last cell must be the summary")


def test_make_exercises_writes_student_copies(tmp_path: Path) -> None:
    assert make_exercises.main(["--out", str(tmp_path)]) == 0
    written = sorted(tmp_path.glob("*.ipynb"))
    assert [p.stem for p in written] == [p.stem for p in SOURCES]
    for path in written:
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, path.name
        assert text.count("# YOUR CODE HERE") >= 3, path.name




@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_grader_fails_helpfully_without_the_solutions(
    source: Path, kernel_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("SPECNORM_NB_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(variable, "1")
    notebook = make_exercises.student_notebook(source)
    client = nbclient.NotebookClient(notebook, kernel_name=KERNEL_NAME, timeout=300,
                                     allow_errors=True,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    graders = 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if "grader" in _tags(cell):
            graders += 1
            assert errors, f"{source.name} cell {index}: the grader passed without a solution"
            error = errors[0]
            assert error.ename in ("AssertionError", "GradcheckError"), (
                f"{source.name} cell {index}: failed with {error.ename}: {error.evalue}")
            assert "Exercise" in error.evalue and len(error.evalue) > 30, (
                f"{source.name} cell {index}: unhelpful message {error.evalue!r}")
        else:
            assert not errors, (f"{source.name} cell {index} fails without the solutions: "
                                f"{errors[0].ename}: {errors[0].evalue}")
    assert graders >= 3
