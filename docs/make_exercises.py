"""Write the student copies of the teaching notebooks: every exercise's solution removed.

Usage (what ``make exercises`` runs)::

    python docs/make_exercises.py [--out build/exercises] [notebooks/NN_name.py ...]

Each exercise in a notebook is a code cell tagged ``solution`` in which the reference solution
sits between two marker lines, as in nbgrader::

    def power_step(matrix, v):
        sigma = u = v_next = None
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION
        return sigma, u, v_next

The student copy replaces the two markers and everything between them by one line
``# YOUR CODE HERE`` at the markers' indentation. The function then returns the placeholders it
set before the markers (``None``), so the grader cell that follows fails with a message that says
what is missing, rather than with a ``NameError`` deep inside NumPy. The copies are written
output-free as ``.ipynb`` (read from the jupytext ``py:percent`` sources).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
PLACEHOLDER = "# YOUR CODE HERE"
ROOT = Path(__file__).resolve().parent.parent


def strip_solutions(source: str, where: str = "cell") -> str:
    """``source`` with every BEGIN/END SOLUTION block replaced by ``# YOUR CODE HERE``.

    Raises ``ValueError`` (naming ``where`` and the line) for an END without BEGIN, a BEGIN
    without END, or a nested BEGIN.
    """
    out: list[str] = []
    opened: int | None = None
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if opened is not None:
                raise ValueError(f"{where}: line {number}: {BEGIN} inside the block opened at "
                                 f"line {opened}")
            opened = number
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + PLACEHOLDER)
        elif stripped == END:
            if opened is None:
                raise ValueError(f"{where}: line {number}: {END} without {BEGIN}")
            opened = None
        elif opened is None:
            out.append(line)
    if opened is not None:
        raise ValueError(f"{where}: the {BEGIN} of line {opened} is never closed")
    return "\n".join(out)


def has_solution(source: str) -> bool:
    return any(line.strip() == BEGIN for line in source.splitlines())


def student_notebook(source: Path):
    """The jupytext source ``source`` as a notebook with the solutions removed (no outputs)."""
    import jupytext

    notebook = jupytext.read(source)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and has_solution(cell.source):
            cell.source = strip_solutions(cell.source, f"{source.name}, cell {index}")
            tags = [t for t in cell.metadata.get("tags", []) if t != "hide-input"]
            cell.metadata["tags"] = tags  # nothing left to hide
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "exercises")
    parser.add_argument("sources", nargs="*", type=Path,
                        help="jupytext sources (default: notebooks/[0-9][0-9]_*.py)")
    args = parser.parse_args(argv)
    import nbformat

    sources = args.sources or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    args.out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        notebook = student_notebook(source)
        target = args.out / (source.stem + ".ipynb")
        nbformat.write(notebook, target)
        count = sum(1 for c in notebook.cells if c.cell_type == "code"
                    and any(line.strip() == PLACEHOLDER for line in c.source.splitlines()))
        print(f"{target}: {count} exercise(s), solutions removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
