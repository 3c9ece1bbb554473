"""The paper's comparison grid: methods x batch sizes x seeds, run in parallel, results on disk.

Layout of an output directory ``OUT``::

    OUT/runs/<method>-B<batch>-seed<seed>/history.jsonl   one JSON object per epoch
    OUT/runs/<method>-B<batch>-seed<seed>/result.json     config, status, final metrics
    OUT/runs/<method>-B<batch>-seed<seed>/checkpoint.npz  while running (removed when done
                                                          unless keep_checkpoints)
    OUT/summary.csv, OUT/summary_long.csv, OUT/correlations.csv, OUT/fig*.png

A run whose ``result.json`` exists with the same configuration is not repeated; an interrupted
run continues from its checkpoint. Each run is a pure function of its configuration, its data
spec and its number of BLAS threads (``threads``): multi-threaded BLAS sums in a different order
than single-threaded BLAS, so results are bit-identical whatever ``jobs`` is, for a fixed
``threads``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from specnorm_np.experiments.datasets import DataSpec, load_splits
from specnorm_np.train import METHODS, TrainConfig, Trainer, TrainingDiverged

__all__ = ["run_id", "build_configs", "run_one", "run_grid", "load_results"]

PAPER_METHODS = ("vanilla", "decay", "adversarial", "spectral")


def run_id(config: TrainConfig) -> str:
    return f"{config.method}-B{config.batch_size}-seed{config.seed}"


def build_configs(
    methods: Sequence[str],
    batch_sizes: Sequence[int],
    seeds: Sequence[int],
    *,
    lr: float = 0.01,
    large_batch_lr_factor: float = 10.0,
    epochs: int = 10,
    large_batch_epochs: int | None = None,
    **options: Any,
) -> list[TrainConfig]:
    """One :class:`TrainConfig` per (method, batch size, seed).

    The smallest batch size trains with ``lr`` for ``epochs`` epochs; every larger one with
    ``lr · large_batch_lr_factor`` (the paper: 10x) for ``large_batch_epochs`` (default
    ``epochs``; the paper doubles it). ``options`` are further :class:`TrainConfig` fields.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if not methods or not batch_sizes or not seeds:
        raise ValueError("need at least one method, one batch size and one seed")
    if any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    smallest = min(int(b) for b in batch_sizes)
    configs = []
    for batch in sorted({int(b) for b in batch_sizes}):
        large = batch != smallest
        for method in methods:
            for seed in seeds:
                configs.append(TrainConfig(
                    method=method, batch_size=batch, seed=int(seed),
                    lr=lr * large_batch_lr_factor if large else lr,
                    epochs=(large_batch_epochs or epochs) if large else epochs, **options))
    return configs


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1))
    temporary.replace(path)


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(json.dumps(record) + "\n" for record in history))
    temporary.replace(path)


def _finished(run_dir: Path, config: TrainConfig, spec: DataSpec) -> dict[str, Any] | None:
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    same_config = result.get("config") == json.loads(json.dumps(config.to_dict()))
    same_data = result.get("data") == dataclasses.asdict(spec)
    return result if same_config and same_data else None


def run_one(config: TrainConfig, spec: DataSpec, out: str | Path, *, threads: int | None = 1,
            quiet: bool = True, keep_checkpoints: bool = False) -> dict[str, Any]:
    """Run (or resume, or skip when finished) one configuration; returns its result dict.

    ``threads`` caps the BLAS threads of this run (threadpoolctl); None leaves them alone.
    A diverged run is recorded with ``status: "diverged"`` and its message, not raised.
    """
    from threadpoolctl import threadpool_limits

    run_dir = Path(out) / "runs" / run_id(config)
    done = _finished(run_dir, config, spec)
    if done is not None:
        done["skipped"] = True
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / "checkpoint.npz"
    start = time.perf_counter()
    with threadpool_limits(limits=threads):
        trainer = Trainer(config, load_splits(spec), checkpoint_path=checkpoint, quiet=quiet)
        status, message = "finished", ""
        try:
            trainer.run(resume=True)
        except TrainingDiverged as error:
            status, message = "diverged", str(error)
    history = trainer.history
    _write_history(run_dir / "history.jsonl", history)
    result = {
        "id": run_id(config), "status": status, "message": message,
        "config": json.loads(json.dumps(config.to_dict())),
        "data": dataclasses.asdict(spec), "threads": threads,
        "final": trainer.final,
        "summary": {
            "epochs_done": len(history),
            "test_acc": history[-1]["test_acc"] if history else None,
            "train_acc": history[-1]["train_acc"] if history else None,
            "gap": history[-1]["gap"] if history else None,
            "best_test_acc": max((r["test_acc"] for r in history), default=None),
        },
        "train_seconds": sum(r["seconds"] for r in history),
        "wall_seconds": time.perf_counter() - start,
    }
    _write_json(run_dir / "result.json", result)
    if status == "finished" and not keep_checkpoints and checkpoint.exists():
        checkpoint.unlink()
    result["skipped"] = False
    return result


def _dask_client(address: str | None, workers: int) -> Any:
    """The active Dask client, else one for ``address``, else a new local cluster."""
    from dask.distributed import Client, LocalCluster, default_client

    if address:
        return Client(address)
    try:
        return default_client()
    except ValueError:
        return Client(LocalCluster(n_workers=workers, threads_per_worker=1))


def run_grid(configs: Sequence[TrainConfig], spec: DataSpec, out: str | Path, *, jobs: int = 1,
             threads: int | None = 1, backend: str = "loky", scheduler: str | None = None,
             quiet: bool = False, keep_checkpoints: bool = False) -> list[dict[str, Any]]:
    """Run every configuration; ``jobs`` > 1 in worker processes through joblib.

    ``backend="loky"``: local processes. ``backend="dask"``: joblib's Dask backend on the active
    Dask client, the scheduler at ``scheduler``, or a new ``LocalCluster`` (``--out`` must then
    be on a file system the workers share). Results come back in the order of ``configs``.
    """
    if backend not in ("loky", "dask"):
        raise ValueError(f"unknown backend {backend!r}; choose 'loky' or 'dask'")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    load_splits(spec)  # fail early (missing data, bad sizes) in the main process
    Path(out).mkdir(parents=True, exist_ok=True)
    options = {"threads": threads, "keep_checkpoints": keep_checkpoints}
    if jobs == 1 and backend == "loky":
        results = []
        for k, config in enumerate(configs, 1):
            result = run_one(config, spec, out, quiet=quiet, **options)
            results.append(result)
            if not quiet:
                print(describe(result, k, len(configs)), flush=True)
        return results
    from joblib import Parallel, delayed, parallel_config

    calls = (delayed(run_one)(c, spec, str(out), quiet=True, **options) for c in configs)
    if backend == "dask":
        client = _dask_client(scheduler, jobs)
        with parallel_config(backend="dask", wait_for_workers_timeout=60):
            results = Parallel(n_jobs=jobs, verbose=0 if quiet else 10)(calls)
        if scheduler is None and client.cluster is not None and not quiet:
            print(f"dask dashboard: {client.dashboard_link}")
    else:
        with _sigterm_as_keyboard_interrupt():
            results = Parallel(n_jobs=jobs, backend="loky", verbose=0 if quiet else 10)(calls)
    if not quiet:
        for k, result in enumerate(results, 1):
            print(describe(result, k, len(results)))
    return list(results)


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a batch system's time limit) like Ctrl-C while workers run.

    joblib stops its loky worker processes when the waiting main process is interrupted; a plain
    SIGTERM would end the main process alone and leave the workers training, orphaned.
    Finished runs are kept, and interrupted ones resume from their checkpoints next time.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe(result: dict[str, Any], index: int, total: int) -> str:
    """One line about a finished run, for the console."""
    if result["status"] != "finished":
        return f"[{index}/{total}] {result['id']}: {result['status']}: {result['message']}"
    summary = result["summary"]
    how = "already done" if result.get("skipped") else f"{result['wall_seconds']:.0f} s"
    return (f"[{index}/{total}] {result['id']}: test acc {summary['test_acc']:.3f}, "
            f"gap {summary['gap']:.3f} ({how})")


def load_results(out: str | Path) -> list[dict[str, Any]]:
    """Every run under ``out/runs`` as its result dict with its ``history`` attached."""
    runs = Path(out) / "runs"
    if not runs.is_dir():
        raise FileNotFoundError(f"{out}: no runs/ directory; run `python -m specnorm_np compare "
                                f"--out {out}` first")
    results = []
    for path in sorted(runs.glob("*/result.json")):
        result = json.loads(path.read_text())
        history_path = path.with_name("history.jsonl")
        result["history"] = [json.loads(line) for line in history_path.read_text().splitlines()
                             if line.strip()] if history_path.exists() else []
        results.append(result)
    return results
