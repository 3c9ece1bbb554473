"""``python -m specnorm_np``: a two-epoch ``compare`` end to end, ``plot``, ``gradcheck``, the
demo's digits fallback, and clear errors for bad arguments."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from specnorm_np.experiments.cli import default_large_batch, main

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")

FIGURES = ["fig1_curves.png", "fig2_gap_vs_input_grad.png", "fig3_hessian.png",
           "fig4_singular_values.png"]


def compare_args(out) -> list[str]:
    return ["compare", "--dataset", "digits", "--train-size", "300", "--model", "vgg",
            "--width", "4", "--epochs", "2", "--batch-sizes", "32,100", "--seeds", "0", "1",
            "--lr", "0.05", "--metric-examples", "60", "--hessian-examples", "30",
            "--hessian-iterations", "3", "--out", str(out), "--quiet"]


def test_compare_two_epochs_end_to_end_then_plot(tmp_path, capsys) -> None:
    out = tmp_path / "grid"
    assert main(compare_args(out)) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 4 * 2 * 2 and "adversarial-B100-seed1" in runs
    for run in runs:
        result = json.loads((out / "runs" / run / "result.json").read_text())
        assert result["status"] == "finished"
        assert result["final"]["hessian_test"]["iterations"] >= 1
        assert len((out / "runs" / run / "history.jsonl").read_text().splitlines()) == 2
    with open(out / "summary.csv", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [row["B"] for row in table] == ["32", "100"]
    assert list(table[0]) == ["model", "B", "epochs", "seeds", "acc vanilla", "acc decay",
                              "acc adversarial", "acc spectral", "alpha", "gap vanilla",
                              "gap decay", "gap adversarial", "gap spectral"]
    assert all(" ± " in table[0][f"acc {m}"] for m in ("vanilla", "spectral"))
    with open(out / "correlations.csv", encoding="utf-8") as handle:
        correlations = list(csv.DictReader(handle))
    assert {int(row["points"]) for row in correlations} == {32}  # 16 runs x 2 checkpoints
    for name in FIGURES:
        assert (out / name).stat().st_size > 10_000
        (out / name).unlink()
    # plot redraws everything from the saved runs
    assert main(["plot", str(out)]) == 0
    assert all((out / name).exists() for name in FIGURES)
    assert "acc spectral" in capsys.readouterr().out


def test_bad_arguments_are_reported_clearly(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "digits", "--methods", "vanilla,dropout", "--out",
              str(tmp_path)])
    assert "unknown method 'dropout'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "digits", "--batch-sizes", "64", "5000", "--out",
              str(tmp_path)])
    assert "larger than the training set (1348 images)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--model", "resnet", "--out", str(tmp_path)])
    assert "invalid choice: 'resnet'" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--data-root", str(missing), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"--data-root {missing}: no such directory" in capsys.readouterr().err
    assert not missing.exists()  # never created without --download
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "no runs/ directory" in capsys.readouterr().err


def test_default_large_batch_scales_the_papers_ratio() -> None:
    assert default_large_batch(50000) == 4096
    assert default_large_batch(5000) == 512
    assert default_large_batch(300) == 128


def test_gradcheck_subcommand_prints_a_passing_table(capsys) -> None:
    assert main(["gradcheck"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "all passed" in printed
    assert "gradient check: Adversarial" in captured.err  # the progress bar names each check
    for component in ("Conv2d 3x2 stride 2", "BatchNorm2d (train)", "Spectral (operator)",
                      "WeightDecay", "Adversarial", "model nin"):
        assert component in printed


def test_demo_falls_back_to_digits_with_a_notice(tmp_path) -> None:
    # run as the user would (a fresh process), with no CIFAR-10 where it looks and no download
    (tmp_path / "x").mkdir()  # exists, holds no data
    command = [sys.executable, "-m", "specnorm_np", "demo", "--data-root", str(tmp_path / "x"),
               "--no-download", "--epochs", "2", "--model", "mlp", "--out",
               str(tmp_path / "demo")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={"MPLBACKEND": "Agg", "PATH": "", "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "NOTICE: CIFAR-10 is not available" in done.stdout
    assert "falls back to scikit-learn's 8x8 digits" in done.stdout
    assert done.stdout.count(str(tmp_path / "x")) == 1  # where it looked, once
    assert "demo --download" in done.stdout and "load_cifar10" not in done.stdout
    for change in ("training images: all 1,348 instead of 2,000",
                   "test images: all 449 instead of 2,000", "model input: 8x8x1",
                   "Unchanged: model mlp, batch size 100"):
        assert change in done.stdout
    assert (tmp_path / "demo" / "digits" / "runs" / "spectral-B100-seed0").is_dir()
    lines = [line for line in done.stdout.splitlines() if line.startswith(("vanilla", "spectral"))]
    assert [line.split()[0] for line in lines[-2:]] == ["vanilla", "spectral"]
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 10_000


def _children(pid: int) -> set[int]:
    children: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                children.update(int(c) for c in handle.read().split())
    except FileNotFoundError:
        pass
    return children


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_compare_also_stops_its_workers(tmp_path) -> None:
    """Killing `compare` (not Ctrl-C: SIGTERM, as `kill` or a job scheduler sends) must not leave
    joblib's worker processes training on their own."""
    args = compare_args(tmp_path / "grid")
    args[args.index("--epochs") + 1] = "500"
    args[args.index("--batch-sizes") + 1] = "32"
    args += ["--methods", "vanilla", "--no-hessian", "--jobs", "2"]
    process = subprocess.Popen([sys.executable, "-m", "specnorm_np", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            workers = _children(process.pid)
            if len(workers) >= 2 and any((tmp_path / "grid" / "runs").glob("*")):
                break
            time.sleep(0.2)
        assert process.poll() is None and len(workers) >= 2, "the workers did not start"
        time.sleep(1.0)  # let them get into training
        workers = _children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "worker processes outlived compare"
    finally:  # leave nothing running, whatever happened
        workers |= _children(process.pid)
        if process.poll() is None:
            process.kill()
        for worker in workers:
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)


@pytest.mark.parametrize("option, value, expected", [
    ("--train-size", "-5", "must be >= 10"),
    ("--train-size", "0", "must be >= 10"),
    ("--epochs", "0", "must be >= 1"),
    ("--batch-sizes", "0", "must be >= 1"),
    ("--width", "0", "must be >= 1"),
    ("--jobs", "0", "must be >= 1"),
    ("--lr", "-1", "must be > 0"),
    ("--lr", "nan", "must be > 0"),
    ("--seeds", "abc", "expected integers, got 'abc'"),
    ("--metric-examples", "-1", "must be >= 1"),
    ("--hessian-examples", "-5", "must be >= 1"),
    ("--hessian-iterations", "0", "must be >= 1"),
    ("--eval-every", "0", "must be >= 1"),
])
def test_bad_values_are_usage_errors_before_any_work(tmp_path, capsys, monkeypatch, option,
                                                     value, expected) -> None:
    """Exit 2 with argparse's usage message, and no data is loaded (the loader would fail)."""
    import specnorm_np.experiments.datasets as datasets

    monkeypatch.setattr(datasets, "load_splits", lambda spec: pytest.fail("data was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--dataset", "digits", option, value, "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and option in err and expected in err
    assert not (tmp_path / "o").exists()


def test_out_naming_a_file_is_a_usage_error(tmp_path, capsys) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--dataset", "digits", "--out", str(target)])
    assert exit_info.value.code == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep me"


# ---- help, defaults, mistakes -----------------------------------------------------------------

def _subparsers():
    import argparse

    from specnorm_np.experiments.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_every_option_has_a_description_and_help_shows_defaults_examples_and_data(capsys):
    parser, commands = _subparsers()
    assert set(commands) == {"demo", "compare", "plot", "gradcheck", "certify"}
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
    for name in ("demo", "compare"):
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "examples:" in text and "SPECNORM_DATA" in text
        assert "~/.cache/specnorm_np" in text and "--download" in text
    assert "(default: 30)" in text and "(default: vgg-bn)" in text and "(default: 1000)" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "specnorm-np" in top and "examples:" in top and "SPECNORM_DATA" in top
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    demo_help = " ".join(capsys.readouterr().out.split())
    assert "(default: mlp)" in demo_help and "(default: 20)" in demo_help


def test_compare_default_model_is_one_that_trains() -> None:
    parser, commands = _subparsers()
    args = parser.parse_args(["compare", "--out", "x"])
    assert args.model == "vgg-bn"


def test_demo_refuses_a_missing_data_root_without_creating_it(tmp_path, capsys) -> None:
    typo = tmp_path / "typo"
    with pytest.raises(SystemExit) as info:
        main(["demo", "--data-root", str(typo), "--out", str(tmp_path / "d")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and f"--data-root {typo}: no such directory" in err
    assert "--download" in err
    assert not typo.exists() and not (tmp_path / "d").exists()


@pytest.mark.parametrize("args, expected", [
    (["--train-size", "0"], "must be >= 10"),
    (["--epochs", "0"], "must be >= 1"),
    (["--batch-size", "0"], "must be >= 1"),
    (["--lr", "-1"], "must be > 0"),
    (["--batch-size", "500", "--train-size", "100"], "larger than --train-size"),
])
def test_demo_bad_values_are_usage_errors(tmp_path, capsys, args, expected) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", *args, "--out", str(tmp_path / "d")])
    assert info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_parallel_compare_without_joblib_names_the_extra(tmp_path, capsys, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "joblib" else real(name, *a))
    with pytest.raises(SystemExit) as info:
        main(["compare", "--dataset", "digits", "--jobs", "2", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert 'pip install "specnorm_np[parallel]"' in capsys.readouterr().err


def _tiny(out, model, batch) -> list[str]:
    return ["compare", "--dataset", "digits", "--train-size", "100", "--test-size", "100",
            "--model", model, "--width", "8", "--epochs", "1", "--batch-sizes", str(batch),
            "--methods", "vanilla", "--no-hessian", "--metric-examples", "20", "--out",
            str(out), "--quiet"]


def test_plot_refuses_to_mix_models_in_one_table(tmp_path, capsys) -> None:
    out = tmp_path / "grid"
    assert main(_tiny(out, "mlp", 20)) == 0
    for written in [out / "summary.csv", *out.glob("fig*.png")]:
        written.unlink()
    # another model in the same directory (other run ids, so compare itself accepts the runs)
    assert main(_tiny(out, "nin", 50)) == 2
    err = capsys.readouterr().err
    assert "mix 2 settings" in err and "model mlp (width 8): vanilla-B20-seed0" in err
    assert "model nin (width 8): vanilla-B50-seed0" in err and "one --out per" in err
    assert main(["plot", str(out)]) == 2
    assert "mix 2 settings" in capsys.readouterr().err
    assert not (out / "summary.csv").exists() and not (out / "fig1_curves.png").exists()
