"""The demo's table, verdicts and figure, on a tiny digits run."""

from __future__ import annotations

import pytest

from specnorm_np.experiments.demo import demo_table, demo_verdicts, draw_demo_figure, run_demo

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    empty = out / "no-data"
    empty.mkdir()
    return run_demo(out, root=str(empty), download=False, epochs=3, quiet=True)


def test_table_names_layers_and_verdicts_compare_with_the_paper(demo):
    table = demo["table"]
    assert "linear 1 (64→256)" in table and "linear 3 (128→10)" in table
    assert "1.weight" not in table
    assert "‖∇x loss‖ test" in table
    verdicts = "\n".join(demo["verdicts"])
    for claim in ("σ smaller in every layer", "input-gradient norm on test data smaller",
                  "generalization gap smaller", "test accuracy higher"):
        assert claim in verdicts
    assert "fallback" not in demo["notice"] and "NOTICE" in demo["notice"]
    assert demo_table(demo["results"]) == table
    assert demo_verdicts(demo["results"]) == demo["verdicts"]


def test_figure_has_labels_titles_and_readable_names(demo):
    fig = draw_demo_figure(demo["results"])
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title().startswith("8x8 digits, mlp")
    ticks = [t.get_text() for t in fig.axes[2].get_xticklabels()]
    assert ticks == ["linear 1 (64→256)", "linear 2 (256→128)", "linear 3 (128→10)"]
    assert "λ = 0.1" in fig._suptitle.get_text()
    assert demo["figure"].stat().st_size > 10_000
