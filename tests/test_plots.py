"""Figures: labels, titles naming the data set and model, readable layer names, colours and
markers, and the refusal to mix settings; read back from the Figure objects."""

from __future__ import annotations

import pytest

from specnorm_np.experiments import plots
from specnorm_np.experiments.compare import build_configs, load_results, run_grid
from specnorm_np.experiments.datasets import DataSpec

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    configs = build_configs(["vanilla", "spectral"], [20, 50], [0], epochs=2, model="mlp",
                            width=16, hessian=True, hessian_examples=20, hessian_iterations=2,
                            metric_examples=30)
    run_grid(configs, DataSpec("digits", 100, 100, 0), out, quiet=True)
    return load_results(out)


@pytest.fixture
def figures(monkeypatch):
    drawn = []

    def keep(fig, path):
        fig.canvas.draw()  # lay the figure out as saving would
        drawn.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def test_every_axis_is_labelled_and_every_title_names_data_set_and_model(results, figures,
                                                                         tmp_path):
    plots.plot_all(results, tmp_path)
    assert len(figures) == 4
    for fig in figures:
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
            assert ax.get_title().startswith("8x8 digits, mlp (width 16)"), ax.get_title()
    fig4 = figures[3].axes[0]
    assert "linear 1 (64→16)" in fig4.get_title()  # not "1.weight"


def test_methods_differ_in_colour_and_marker_and_batch_sizes_in_line_style(results, figures,
                                                                           tmp_path):
    plots.plot_gap_vs_gradient(results, tmp_path / "f.png")
    ax = figures[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"vanilla B=20", "vanilla B=50", "spectral B=20", "spectral B=50"}
    assert lines["vanilla B=20"].get_color() != lines["spectral B=20"].get_color()
    assert lines["vanilla B=20"].get_marker() != lines["spectral B=20"].get_marker()
    assert lines["vanilla B=20"].get_linestyle() != lines["vanilla B=50"].get_linestyle()
    assert plots.COLORS["vanilla"] == "#0072B2" and plots.COLORS["spectral"] == "#E69F00"
    assert len(set(plots.MARKERS.values())) == len(plots.MARKERS)


def test_short_curves_carry_markers(results, figures, tmp_path):
    plots.plot_curves(results, tmp_path / "f.png")
    for ax in figures[0].axes:
        for line in ax.get_lines():
            assert line.get_marker() not in (None, "None", ""), line.get_label()
            assert line.get_markevery() == 1  # two epochs: a marker on each point


def test_layer_labels_are_readable():
    cifar = {"config": {"model": "vgg-bn", "width": None},
             "data_identity": {"dataset": "cifar10"}}
    labels = plots.layer_labels(cifar)
    assert labels["0.weight"] == "conv 1 (3→16, 3x3)"
    assert "linear 1 (1024→128)" in labels.values() and "linear 2 (128→10)" in labels.values()
    mlp = {"config": {"model": "mlp", "width": None}, "data_identity": {"dataset": "cifar10"}}
    assert plots.layer_labels(mlp)["1.weight"] == "linear 1 (3072→256)"


def test_mixed_data_sets_are_refused_listing_each(results, tmp_path):
    other = [dict(r, id=f"{r['id']}-c", data_identity={**r["data_identity"],
                                                        "dataset": "cifar10"})
             for r in results[:1]]
    with pytest.raises(plots.MixedRunsError) as info:
        plots.plot_all(results + other, tmp_path)
    message = str(info.value)
    assert "8x8 digits, model mlp" in message and "CIFAR-10, model mlp" in message
    assert not list(tmp_path.glob("*.png"))


def test_unknown_layer_lists_the_readable_names(results, tmp_path):
    with pytest.raises(ValueError, match=r"nosuch.*1\.weight \(linear 1 \(64→16\)\)"):
        plots.plot_all(results, tmp_path, layer="nosuch")
