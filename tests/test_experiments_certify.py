"""``certify``: post-hoc certificates of the runs of a real (tiny) compare directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from specnorm_np.checkpoint import load_checkpoint
from specnorm_np.experiments.certify import certify_directory, load_run_model
from specnorm_np.experiments.cli import main
from specnorm_np.experiments.compare import build_configs, run_grid
from specnorm_np.experiments.datasets import DataSpec

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


@pytest.fixture(scope="module")
def compare_directory(tmp_path_factory):
    out = tmp_path_factory.mktemp("certify")
    configs = build_configs(["vanilla", "spectral"], [50], [0], lr=0.05, epochs=2, model="vgg",
                            width=4, metric_examples=40, hessian=False)
    run_grid(configs, DataSpec("digits", train_size=200, test_size=None), out, quiet=True,
             keep_checkpoints=True)
    for run in sorted((out / "runs").iterdir()):  # final weights as compare will save them
        state = load_checkpoint(run / "checkpoint.npz")["model"]
        np.savez_compressed(run / "weights.npz", **{
            k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in state.items()})
    (out / "runs" / "unfinished-B50-seed0").mkdir()
    (out / "runs" / "unfinished-B50-seed0" / "result.json").write_text(
        (out / "runs" / "vanilla-B50-seed0" / "result.json").read_text())
    return out


def test_certify_directory_writes_json_and_figure(compare_directory):
    report = certify_directory(compare_directory, test_size=100, radii=[0, 0.01, 0.1],
                               local_examples=10, power_iterations=20)
    saved = json.loads((compare_directory / "certified.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert sorted(saved["runs"]) == ["spectral-B50-seed0", "vanilla-B50-seed0"]
    assert saved["skipped"] == {"unfinished-B50-seed0": "no weights.npz"}
    assert (compare_directory / "fig5_true_norms.png").stat().st_size > 10_000
    for entry in saved["runs"].values():
        assert entry["examples"] == 100 and entry["local_examples"] == 10
        assert entry["local_lipschitz_max"] <= entry["lipschitz_upper"]
        accuracies = [c["accuracy"] for c in entry["certified_accuracy"]]
        assert accuracies[0] == entry["accuracy"] and accuracies == sorted(accuracies)[::-1]
        convs = [r for r in entry["layers"] if r["kind"] == "conv"]
        assert len(convs) == 5 and all(r["lower"] <= r["upper"] for r in convs)
        assert all(r["exact"] is not None and r["lower"] <= r["exact"] <= r["upper"]
                   for r in convs)  # 8x8 inputs: the dense SVD is cheap
        # the true norm of a 3x3 conv at 8x8 is well above its reshaped σ
        assert convs[0]["lower"] > 1.3 * convs[0]["reshaped_sigma"]


def test_rebuilt_model_matches_the_saved_weights(compare_directory):
    model, result = load_run_model(compare_directory / "runs" / "spectral-B50-seed0")
    assert result["config"]["method"] == "spectral"
    with np.load(compare_directory / "runs" / "spectral-B50-seed0" / "weights.npz") as saved:
        np.testing.assert_array_equal(model.state_dict()["0.weight"],
                                      saved["0.weight"].astype(np.float32))


def test_certify_command(compare_directory, capsys):
    assert main(["certify", str(compare_directory), "--test-size", "50", "--local-examples",
                 "5", "--power-iterations", "10", "--radii", "0", "0.05"]) == 0
    output = capsys.readouterr().out
    assert "vanilla-B50-seed0: L <=" in output and "unfinished-B50-seed0: skipped" in output
    saved = json.loads((compare_directory / "certified.json").read_text())
    assert saved["radii"] == [0.0, 0.05] and saved["test_size"] == 50
