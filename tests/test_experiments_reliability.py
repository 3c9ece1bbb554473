"""Nothing lost, nothing mixed: refusals, locks, corrupt files, divergence and killed processes
in the comparison grid (``specnorm_np.experiments.compare`` and the ``compare``/``plot`` CLI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from specnorm_np.experiments.cli import main
from specnorm_np.experiments.compare import (
    ResultsError,
    build_configs,
    load_results,
    run_grid,
    run_id,
    run_one,
)
from specnorm_np.experiments.datasets import DataSpec
from specnorm_np.experiments.provenance import DirectoryLock, DirectoryLocked, code_version
from specnorm_np.models import build_model

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")

DIGITS = DataSpec("digits", train_size=200, test_size=100)


def configs(methods=("vanilla",), epochs=2, **options):
    base = dict(lr=0.05, epochs=epochs, model="mlp", width=16, metric_examples=30,
                hessian=False)
    base.update(options)
    return build_configs(list(methods), [50], [0], **base)


def test_run_directory_records_its_identity_code_and_weights(tmp_path) -> None:
    (config,) = configs()
    result = run_one(config, DIGITS, tmp_path)
    run_dir = tmp_path / "runs" / run_id(config)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["config"]["lr"] == 0.05 and manifest["data"]["train_size"] == 200
    assert manifest["created_by"]["fingerprint"] == code_version()["fingerprint"]
    assert result["code"]["fingerprint"] == code_version()["fingerprint"]
    assert result["summary"]["updates"] == 2 * 4 and result["final"]["updates"] == 8
    assert result["summary"]["batch_fraction"] == pytest.approx(50 / 200)
    weights = dict(np.load(run_dir / "weights.npz"))
    assert all(v.dtype == np.float16 for v in weights.values())
    model = build_model("mlp", (8, 8, 1), 10, width=16)
    model.load_state_dict(weights)  # the saved weights rebuild the model
    certified = result["certified"]  # the certificate of the finished model
    assert certified["test_examples"] == 100
    layers = {layer["name"]: layer for layer in certified["layers"]}
    assert layers["1.weight"]["lower"] <= layers["1.weight"]["upper"]
    assert certified["local_lipschitz_max"] <= certified["lipschitz_upper"]
    assert "certified" not in run_one(configs(methods=("decay",))[0], DIGITS, tmp_path,
                                      certify=0)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "history.jsonl", "result.json", "run.json", "weights.npz"]  # no temporaries left


def test_another_data_specification_is_refused_not_resumed(tmp_path) -> None:
    """Kill a run after epoch 1 and rerun with another --train-size: refused, naming it."""
    (config,) = configs(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        from specnorm_np.experiments import compare

        original = compare.Trainer.run

        def interrupted(self, **kwargs):
            return original(self, on_epoch=lambda record: (_ for _ in ()).throw(
                KeyboardInterrupt()), **kwargs)

        compare.Trainer.run = interrupted
        try:
            run_one(config, DIGITS, tmp_path)
        finally:
            compare.Trainer.run = original
    assert (tmp_path / "runs" / run_id(config) / "checkpoint.npz").is_file()
    other = DataSpec("digits", train_size=100, test_size=100)
    refused = run_one(config, other, tmp_path)
    assert refused["status"] == "refused"
    assert "data.train_size: 200 in the file vs 100 now" in refused["message"]
    resumed = run_one(config, DIGITS, tmp_path)
    assert resumed["status"] == "finished" and resumed["summary"]["epochs_done"] == 3


def test_changed_numerics_code_refuses_to_resume_an_interrupted_run(tmp_path, monkeypatch):
    (config,) = configs(epochs=3)
    from specnorm_np.experiments import compare

    original = compare.Trainer.run
    monkeypatch.setattr(compare.Trainer, "run", lambda self, **kw: original(
        self, on_epoch=lambda r: (_ for _ in ()).throw(KeyboardInterrupt()), **kw))
    with pytest.raises(KeyboardInterrupt):
        run_one(config, DIGITS, tmp_path)
    monkeypatch.setattr(compare.Trainer, "run", original)
    monkeypatch.setattr(compare, "code_version", lambda: {
        "commit": "x", "dirty": False, "fingerprint": "0000000000000000"})
    refused = run_one(config, DIGITS, tmp_path)
    assert refused["status"] == "refused" and "identity.code" in refused["message"]
    assert "--overwrite" in refused["message"]
    redone = run_one(config, DIGITS, tmp_path, overwrite=True)
    assert redone["status"] == "finished"


def test_a_second_compare_on_the_same_directory_is_refused(tmp_path) -> None:
    with DirectoryLock(tmp_path):
        with pytest.raises(DirectoryLocked, match="another compare is using this output"):
            run_grid(configs(), DIGITS, tmp_path, quiet=True)
        assert main(["compare", "--dataset", "digits", "--train-size", "200",
                     "--batch-sizes", "50", "--epochs", "1", "--methods", "vanilla",
                     "--no-hessian", "--out", str(tmp_path)]) == 2
    assert run_grid(configs(), DIGITS, tmp_path, quiet=True)[0]["status"] == "finished"


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path) -> None:
    code = ("import sys, time; from specnorm_np.experiments.provenance import DirectoryLock; "
            f"lock = DirectoryLock({str(tmp_path)!r}).__enter__(); print('locked', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryLocked, match=f"pid {holder.pid}"):
            DirectoryLock(tmp_path).__enter__()
    finally:
        holder.kill()
        holder.wait()
    with DirectoryLock(tmp_path):
        pass


def test_corrupt_checkpoint_fails_that_run_only(tmp_path, capsys) -> None:
    grid = configs(methods=("vanilla", "decay"))
    bad_dir = tmp_path / "runs" / run_id(grid[0])
    bad_dir.mkdir(parents=True)
    from specnorm_np.experiments.compare import _identity

    (bad_dir / "run.json").write_text(json.dumps(_identity(grid[0], DIGITS, 1)))
    (bad_dir / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip")
    results = run_grid(grid, DIGITS, tmp_path, quiet=True)
    assert results[0]["status"] == "failed"
    assert "checkpoint" in results[0]["message"] and "mv " in results[0]["message"]
    assert results[1]["status"] == "finished"  # the other run went on
    assert not (bad_dir / "result.json").exists()


def test_stale_temporaries_are_removed_and_names_never_collide(tmp_path) -> None:
    from specnorm_np._files import temporary_name, write_atomically

    (config,) = configs()
    run_dir = tmp_path / "runs" / run_id(config)
    run_dir.mkdir(parents=True)
    stale = run_dir / ".checkpoint.npz.tmp-12345-abcd"
    stale.write_bytes(b"left by kill -9")
    run_one(config, DIGITS, tmp_path)
    assert not stale.exists()
    names = {temporary_name(tmp_path / "result.json") for _ in range(200)}
    assert len(names) == 200
    write_atomically(tmp_path / "x.json", "{}")
    assert sorted(os.listdir(tmp_path)) == ["runs", "x.json"]


def test_truncated_or_tampered_results_give_one_line_errors(tmp_path, capsys) -> None:
    (config,) = configs()
    run_one(config, DIGITS, tmp_path)
    result_file = tmp_path / "runs" / run_id(config) / "result.json"
    history_file = result_file.with_name("history.jsonl")
    history = history_file.read_text()
    history_file.write_text(history[: len(history) // 2])
    with pytest.raises(ResultsError, match=r"history.jsonl, line 2: unreadable"):
        load_results(tmp_path)
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "history.jsonl" in err
    history_file.write_text(history)
    result_file.write_text(result_file.read_text()[:40])
    assert main(["plot", str(tmp_path)]) == 2
    assert "result.json: unreadable results file" in capsys.readouterr().err
    result_file.write_text(json.dumps({"id": "x"}))
    with pytest.raises(ResultsError, match="not a compare result"):
        load_results(tmp_path)


def test_a_grid_where_every_run_diverged_still_reports(tmp_path, capsys) -> None:
    grid = configs(methods=("vanilla", "spectral"), lr=1e30)
    with pytest.warns(RuntimeWarning):
        results = run_grid(grid, DIGITS, tmp_path, quiet=True)
    assert {r["status"] for r in results} == {"diverged"}
    assert main(["plot", str(tmp_path)]) == 2
    assert "no finished run to summarize" in capsys.readouterr().err


def test_plot_names_a_missing_layer(tmp_path, capsys) -> None:
    run_grid(configs(), DIGITS, tmp_path, quiet=True)
    assert main(["plot", str(tmp_path), "--layer", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "--layer 'nosuch': no such weight" in err and "1.weight" in err


def test_large_batch_length_in_updates() -> None:
    grid = build_configs(["vanilla"], [64, 4096], [0, 1], epochs=100,
                         large_batch_updates=2400, train_size=50000)
    large = [c for c in grid if c.batch_size == 4096]
    assert {c.epochs for c in large} == {185}  # ceil(2400 / 13 steps per epoch)
    assert [c.seed for c in grid] == [0, 0, 1, 1]  # seeds outermost: paired cells first
    with pytest.raises(ValueError, match="not both"):
        build_configs(["vanilla"], [64, 512], [0], large_batch_epochs=3,
                      large_batch_updates=10, train_size=100)


def test_a_worker_whose_parent_is_already_gone_exits_before_any_work() -> None:
    """The task can reach a worker that finished starting only after ``compare`` was killed:
    it must exit (code 3) at once, not train unobserved."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: no process has this id now (reuse within this test is negligible)
    code = ("from specnorm_np.experiments.compare import _watch_parent\n"
            f"_watch_parent({dead.pid})\n"
            "print('trained anyway')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3 and "trained anyway" not in done.stdout, done
    alive = subprocess.run([sys.executable, "-c", code.replace(str(dead.pid), str(os.getpid()))],
                           capture_output=True, text=True, timeout=120)
    assert alive.returncode == 0 and "trained anyway" in alive.stdout, alive  # parent alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_zombie_parent_counts_as_gone() -> None:
    """Killed but not yet reaped by its own parent, ``compare`` is a zombie: ``kill(pid, 0)``
    still succeeds, yet a worker that gets its task then must not train."""
    from specnorm_np.experiments.compare import _parent_gone

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while (Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
               and time.monotonic() < deadline):
            time.sleep(0.05)
        assert _parent_gone(zombie.pid)  # exited, not reaped yet: a zombie
        assert not _parent_gone(os.getpid())  # a running process is not gone
    finally:
        zombie.wait()
    assert _parent_gone(zombie.pid)  # reaped: no such process


@pytest.mark.slow
def test_workers_exit_when_the_parent_is_killed(tmp_path) -> None:
    psutil = pytest.importorskip("psutil")
    command = [sys.executable, "-m", "specnorm_np", "compare", "--dataset", "digits",
               "--model", "vgg", "--width", "8", "--batch-sizes", "16", "--epochs", "200",
               "--methods", "vanilla", "decay", "--no-hessian", "--jobs", "2", "--quiet",
               "--out", str(tmp_path / "out")]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers = []
        while time.monotonic() < deadline:
            workers = []
            for child in psutil.Process(parent.pid).children(recursive=True):
                try:
                    line = " ".join(child.cmdline())
                except (psutil.ZombieProcess, psutil.NoSuchProcess):
                    continue
                if "loky" in line or "joblib" in line:
                    workers.append(child)
            if len(workers) >= 2 and any((tmp_path / "out" / "runs").glob("*/run.json")):
                break
            time.sleep(0.5)
        assert workers, "no worker processes appeared"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers still running 30 s after the parent was killed: {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.slow
def test_fault_injection_kills_corruption_and_a_rival_lose_nothing(tmp_path) -> None:
    """Kill ``compare`` at random moments (SIGKILL, SIGTERM, SIGINT), corrupt a finished
    result, start a rival on the same directory: after re-running, every run's history and
    weights equal those of an uninterrupted grid."""
    command = [sys.executable, "-m", "specnorm_np", "compare", "--dataset", "digits",
               "--train-size", "200", "--test-size", "100", "--model", "mlp", "--width", "16",
               "--batch-sizes", "20", "50", "--epochs", "4", "--methods", "vanilla", "spectral",
               "--no-hessian", "--certify-examples", "0", "--quiet"]

    def histories(out: Path) -> dict:
        return {r["id"]: [{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]]
                for r in load_results(out)}

    reference = tmp_path / "reference"
    subprocess.run([*command, "--out", str(reference)], check=True, timeout=300)
    out = tmp_path / "faulty"
    rng = np.random.default_rng(7)
    for signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        process = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # once training has started (imports take a while)
        while not list(out.glob("runs/*/run.json")) and process.poll() is None:
            assert time.monotonic() < deadline, "compare never started a run"
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 1.5)))
        process.send_signal(signum)
        process.wait(timeout=60)
    # a rival started while another process holds the directory is refused, changes nothing
    before = histories(out)
    with DirectoryLock(out):
        rival = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True,
                               timeout=120)
    assert rival.returncode == 2 and "another compare is using this output" in rival.stderr
    assert histories(out) == before
    subprocess.run([*command, "--out", str(out)], check=True, timeout=300)
    # corrupt one finished result: it is named; moving it aside redoes just that run
    victim = sorted((out / "runs").glob("*/result.json"))[0]
    victim.write_text(victim.read_text()[:25])
    broken = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert broken.returncode != 0 and str(victim) in broken.stderr
    victim.rename(victim.with_name("result.json.bad"))
    subprocess.run([*command, "--out", str(out)], check=True, timeout=300)
    assert histories(out) == histories(reference)
    for path in sorted(reference.glob("runs/*/weights.npz")):
        ours, theirs = np.load(out / path.relative_to(reference)), np.load(path)
        assert all(np.array_equal(ours[k], theirs[k]) for k in theirs.files)
    leftovers = [p.name for p in out.rglob(".*tmp-*")]
    assert leftovers == []
