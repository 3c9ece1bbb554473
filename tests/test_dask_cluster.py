"""``compare`` on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1, started without ``SPECNORM_DATA`` and in another working directory.

Checks that the results equal a serial run's, that the client's resolved data location and
output directory reach the workers, and that a worker-side failure names the worker and what it
lacked. Every process is started here, bounded in time, and killed at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import specnorm_np
from specnorm_np.experiments.cli import main
from specnorm_np.experiments.compare import build_configs, load_results, resolved, run_grid
from specnorm_np.experiments.datasets import DataSpec, load_splits

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
distributed = pytest.importorskip("distributed")
DASK = Path(sys.executable).with_name("dask")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DASK.exists(), reason=f"no dask command beside {sys.executable}"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX process groups"),
]
STARTUP_SECONDS = 60


def _real_cifar() -> Path | None:
    from specnorm_np.data import find_cifar10_folder

    root = os.environ.get("SPECNORM_DATA")
    return find_cifar10_folder(root) if root else None


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The address of a scheduler with two single-threaded worker processes on 127.0.0.1."""
    base = tmp_path_factory.mktemp("cluster")
    elsewhere = base / "worker-cwd"  # relative paths of the client mean nothing here
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SPECNORM_DATA"}
    package_root = str(Path(specnorm_np.__file__).resolve().parents[1])
    env.update(PYTHONPATH=os.pathsep.join([package_root, env.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg",
               DASK_DISTRIBUTED__WORKER__DAEMON="False")
    file = base / "scheduler.json"
    common = {"cwd": elsewhere, "env": env, "stdout": subprocess.DEVNULL,
              "stderr": subprocess.DEVNULL, "start_new_session": True}
    processes = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--no-dashboard", "--scheduler-file", str(file)], **common)]
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not file.exists() and time.monotonic() < deadline:
            assert processes[0].poll() is None, "the scheduler exited"
            time.sleep(0.1)
        assert file.exists(), "the scheduler did not start"
        for name in ("w1", "w2"):
            processes.append(subprocess.Popen(
                [str(DASK), "worker", "--scheduler-file", str(file), "--host", "127.0.0.1",
                 "--nworkers", "1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--name", name, "--local-directory", str(base / name)], **common))
        with distributed.Client(scheduler_file=str(file), timeout=STARTUP_SECONDS) as client:
            client.wait_for_workers(2, timeout=STARTUP_SECONDS)
            address = client.scheduler.address
            workers = client.scheduler_info()["workers"]
        assert address.startswith("tcp://127.0.0.1:")
        assert all(w.startswith("tcp://127.0.0.1:") for w in workers) and len(workers) == 2
        yield address
    finally:
        _close_clients()
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _close_clients() -> None:
    """Close the clients that compare opened (``compare._dask_client`` does not close its own;
    left open they try to reconnect to the stopped scheduler and log tracebacks)."""
    from distributed.client import _global_clients

    for client in list(_global_clients.values()):
        client.close()


def _numbers(out: Path) -> dict[str, tuple]:
    """What a run computed (history and final metrics), without timings and provenance."""
    return {r["id"]: ([{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]],
                      r["final"], r["status"]) for r in load_results(out)}


def _args(out: str, *extra: str) -> list[str]:
    return ["compare", "--dataset", "digits", "--train-size", "100", "--test-size", "100",
            "--model", "mlp", "--width", "8", "--epochs", "2", "--batch-sizes", "20", "50",
            "--methods", "vanilla", "spectral", "--hessian-examples", "10",
            "--hessian-iterations", "2", "--metric-examples", "20", "--out", out, "--quiet",
            *extra]


def test_cluster_results_equal_a_serial_run(scheduler, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out: the client resolves it for the workers
    assert main(_args("serial")) == 0
    assert main(_args("cluster", "--backend", "dask", "--scheduler", scheduler,
                      "--jobs", "2")) == 0
    serial, cluster = _numbers(tmp_path / "serial"), _numbers(tmp_path / "cluster")
    assert len(cluster) == 4 and all(status == "finished" for *_, status in cluster.values())
    assert cluster == serial


@pytest.mark.skipif(_real_cifar() is None, reason="needs SPECNORM_DATA with CIFAR-10")
def test_workers_without_specnorm_data_get_the_clients_data_location(scheduler, tmp_path):
    out = tmp_path / "grid"
    assert main(["compare", "--train-size", "100", "--test-size", "100", "--model", "mlp",
                 "--width", "8", "--epochs", "1", "--batch-sizes", "50", "--methods",
                 "vanilla", "spectral", "--no-hessian", "--metric-examples", "20",
                 "--backend", "dask", "--scheduler", scheduler, "--jobs", "2",
                 "--out", str(out), "--quiet"]) == 0
    results = load_results(out)
    assert [r["status"] for r in results] == ["finished", "finished"]
    assert {r["data"]["root"] for r in results} == {str(_real_cifar().resolve())}


@pytest.mark.skipif(_real_cifar() is None, reason="needs SPECNORM_DATA with CIFAR-10")
def test_a_worker_failure_names_the_worker_and_what_it_lacked(scheduler, tmp_path):
    # a copy that the client has loaded (cached in its process) and that is gone before the
    # workers look: as on a cluster whose workers lack the data at the client's path
    copy = tmp_path / "copy" / "cifar-10-batches-py"
    copy.mkdir(parents=True)
    for path in _real_cifar().iterdir():
        (copy / path.name).symlink_to(path)
    spec = DataSpec("cifar10", 100, 100, 0, root=str(copy))
    load_splits(resolved(spec))
    shutil.rmtree(copy.parent)
    configs = build_configs(["vanilla"], [50], [0], epochs=1, model="mlp", width=8,
                            hessian=False, metric_examples=20)
    with pytest.raises(RuntimeError) as info:
        run_grid(configs, spec, tmp_path / "out", jobs=2, backend="dask", scheduler=scheduler,
                 quiet=True)
    message = str(info.value)
    assert "run vanilla-B50-seed0 failed on Dask worker" in message and "(pid " in message
    assert f"DatasetError: CIFAR-10 not found in {copy.resolve()}" in message
