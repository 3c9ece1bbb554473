"""The paper's comparison grid: methods x batch sizes x seeds, run in parallel, results on disk.

Layout of an output directory ``OUT``::

    OUT/.lock                                   held while a compare uses OUT (one at a time)
    OUT/runs/<method>-B<batch>-seed<seed>/run.json       what defines the run (see below)
    OUT/runs/<method>-B<batch>-seed<seed>/history.jsonl  one JSON object per epoch
    OUT/runs/<method>-B<batch>-seed<seed>/result.json    status, final metrics, code version
    OUT/runs/<method>-B<batch>-seed<seed>/weights.npz    final weights (float16, compressed)
    OUT/runs/<method>-B<batch>-seed<seed>/checkpoint.npz while running (removed when done
                                                          unless keep_checkpoints)
    OUT/summary.csv, OUT/summary_long.csv, OUT/statistics.json, OUT/fig*.png

**One configuration per run directory.** ``run.json`` records the training configuration, the
data specification (data set, sizes, data seed, preprocessing; not where the files live), the
BLAS threads and the code that created it. A later ``compare`` with the same run id but any other
configuration is refused for that run, naming every difference (use another ``--out``, or
``overwrite=True`` / ``--overwrite`` to delete and redo such runs); the other runs go on. A
finished run with the same configuration is skipped; an interrupted one continues from its
checkpoint, unless the numerics code changed since (its fingerprint, see
:func:`~specnorm_np.experiments.provenance.code_version`), which is refused the same way.

Each run is a pure function of its configuration, its data and its number of BLAS threads
(multi-threaded BLAS sums in a different order), so results are bit-identical whatever ``jobs``
is, for a fixed ``threads``. A run that diverges is recorded with ``status: "diverged"``; a run
that cannot proceed (refused, corrupt checkpoint) gets a one-line message and no result file,
and the grid goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specnorm_np._files import remove_stale_temporaries, write_atomically
from specnorm_np.checkpoint import CheckpointError
from specnorm_np.experiments.datasets import PREPROCESSING, DataSpec, load_splits
from specnorm_np.experiments.provenance import DirectoryLock, code_version
from specnorm_np.train import (
    METHODS,
    CheckpointMismatch,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    describe_differences,
)

__all__ = ["run_id", "build_configs", "run_one", "run_grid", "load_results", "data_identity",
           "trainer_identity", "ResultsError"]

PAPER_METHODS = ("vanilla", "decay", "adversarial", "spectral")
STATUSES_WITH_RESULTS = ("finished", "diverged")
CERTIFY_EXAMPLES = 500  # test images for each finished run's certified accuracy


class ResultsError(ValueError):
    """A results file is missing, truncated or not what ``compare`` writes (names the file)."""


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
    large_batch_updates: int | None = None,
    train_size: int | None = None,
    **options: Any,
) -> list[TrainConfig]:
    """One :class:`TrainConfig` per (method, batch size, seed), seeds outermost.

    The smallest batch size trains with ``lr`` for ``epochs`` epochs; every larger one with
    ``lr · large_batch_lr_factor`` (the paper: 10x) for ``large_batch_epochs`` (default
    ``epochs``; the paper doubles it), or for the fewest epochs that make at least
    ``large_batch_updates`` optimizer steps (needs ``train_size``, the number of training
    images). ``options`` are further :class:`TrainConfig` fields. The order (seed, batch size,
    method) makes a partly finished grid hold complete, paired seeds first.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if not methods or not batch_sizes or not seeds:
        raise ValueError("need at least one method, one batch size and one seed")
    if any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    if large_batch_updates is not None:
        if large_batch_epochs is not None:
            raise ValueError("give the large-batch length in epochs or in updates, not both")
        if train_size is None or int(large_batch_updates) < 1:
            raise ValueError("large_batch_updates needs a positive count and train_size")
    smallest = min(int(b) for b in batch_sizes)
    configs = []
    for seed in seeds:
        for batch in sorted({int(b) for b in batch_sizes}):
            large = batch != smallest
            run_epochs = epochs
            if large and large_batch_updates is not None:
                run_epochs = math.ceil(int(large_batch_updates) / math.ceil(train_size / batch))
            elif large and large_batch_epochs is not None:
                run_epochs = large_batch_epochs
            for method in methods:
                configs.append(TrainConfig(
                    method=method, batch_size=batch, seed=int(seed),
                    lr=lr * large_batch_lr_factor if large else lr, epochs=run_epochs,
                    **options))
    return configs


def data_identity(spec: DataSpec) -> dict[str, Any]:
    """What the data of a run *is* (not where its files live): set, sizes, seed, preprocessing."""
    return {"dataset": spec.dataset, "train_size": spec.train_size,
            "test_size": spec.test_size, "data_seed": spec.data_seed,
            "preprocessing": PREPROCESSING}


def _identity(config: TrainConfig, spec: DataSpec, threads: int | None) -> dict[str, Any]:
    return {"config": json.loads(json.dumps(config.to_dict())), "data": data_identity(spec),
            "threads": threads}


def trainer_identity(spec: DataSpec, threads: int | None) -> dict[str, Any]:
    """What ``run_one`` stores in (and demands of) a run's checkpoint besides its
    configuration: the data identity, the BLAS threads and the numerics code's fingerprint."""
    return {"data": data_identity(spec), "threads": threads,
            "code": code_version()["fingerprint"]}


def _write_json(path: Path, value: Any) -> None:
    write_atomically(path, json.dumps(value, indent=1))


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    write_atomically(path, "".join(json.dumps(record) + "\n" for record in history))


def read_json(path: Path) -> Any:
    """A JSON file, or :class:`ResultsError` naming it when it is unreadable or truncated."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ResultsError(f"{path}: unreadable results file ({error}); move it aside and run "
                           "the same compare command again to redo that run") from None


def _stored_identity(run_dir: Path) -> dict[str, Any] | None:
    """The identity recorded in ``run.json`` (or, for directories of earlier versions, in
    ``result.json``); None for a new directory."""
    for name in ("run.json", "result.json"):
        path = run_dir / name
        if path.is_file():
            stored = read_json(path)
            return {"config": stored.get("config"), "data": stored.get("data_identity",
                                                                         stored.get("data")),
                    "threads": stored.get("threads")}
    return None


def _refused(config: TrainConfig, status: str, message: str) -> dict[str, Any]:
    return {"id": run_id(config), "status": status, "message": message, "skipped": False}


def _parent_gone(parent_pid: int) -> bool:
    """True when process ``parent_pid`` no longer runs: it does not exist (``kill(pid, 0)``
    fails) or it is a zombie (killed, not yet reaped by its own parent; Linux ``/proc``)."""
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists but belongs to someone else
        pass
    try:
        stat = Path(f"/proc/{parent_pid}/stat").read_text()
    except FileNotFoundError:  # with /proc: it vanished meanwhile; without (macOS): alive
        return Path("/proc/self").exists()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]  # state follows "(command name)"


def _watch_parent(parent_pid: int | None) -> None:
    """In a local worker process: exit as soon as the parent (``compare``) is gone.

    A killed parent (``kill -9``) cannot stop its workers; they notice here within a second
    instead of training on for minutes. A worker may also pick up its task only *after* the
    parent died (the task was already in the queue while the worker was still starting): it
    is then no longer the parent's child, finds the parent gone and exits before any work.
    """
    if parent_pid is None or os.getpid() == parent_pid:
        return
    if os.getppid() != parent_pid and _parent_gone(parent_pid):
        os._exit(3)
    if os.getppid() == parent_pid:
        def alive() -> bool:  # reparenting is the signal: a zombie parent counts as gone
            return os.getppid() == parent_pid
    else:
        def alive() -> bool:
            return not _parent_gone(parent_pid)

    def watch() -> None:
        while alive():
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_one(config: TrainConfig, spec: DataSpec, out: str | Path, *, threads: int | None = 1,
            quiet: bool = True, keep_checkpoints: bool = False, overwrite: bool = False,
            parent_pid: int | None = None, certify: int = CERTIFY_EXAMPLES) -> dict[str, Any]:
    """Run (or resume, or skip when finished) one configuration; returns its result dict.

    ``threads`` caps the BLAS threads of this run (threadpoolctl); None leaves them alone.
    A diverged run is recorded with ``status: "diverged"`` and its message, not raised. A run
    directory that holds another configuration gives ``status: "refused"`` (or is deleted and
    redone with ``overwrite``); an unreadable checkpoint gives ``status: "failed"``; neither
    writes a result file. A finished run also records, under ``"certified"``, the per-layer
    intervals of the true operator norms, the certified Lipschitz bound and the certified
    accuracy at a few radii on ``certify`` test images
    (:func:`~specnorm_np.experiments.certify.certify_model`; 0 skips it).
    """
    from threadpoolctl import threadpool_limits

    _watch_parent(parent_pid)
    run_dir = Path(out) / "runs" / run_id(config)
    identity = _identity(config, spec, threads)
    try:
        stored = _stored_identity(run_dir)
    except ResultsError as error:
        if not overwrite:
            return _refused(config, "failed", f"{error} (or pass --overwrite)")
        stored = {}
    if stored is not None and stored != identity:
        differences = describe_differences(stored, identity)
        if not overwrite:
            return _refused(config, "refused", (
                f"{run_dir} holds another configuration ({'; '.join(differences)}); use "
                "another --out, or --overwrite to delete that run and redo it"))
        shutil.rmtree(run_dir)
    result_path = run_dir / "result.json"
    if stored == identity and result_path.is_file():
        try:
            done = read_json(result_path)
        except ResultsError as error:
            return _refused(config, "failed", str(error))
        if done.get("status") in STATUSES_WITH_RESULTS:
            done["skipped"] = True
            return done
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)  # left by a killed process; compare holds OUT's lock
    version = code_version()
    if not (run_dir / "run.json").is_file():
        _write_json(run_dir / "run.json", {**identity, "id": run_id(config),
                                           "created_by": version})
    checkpoint = run_dir / "checkpoint.npz"
    start = time.perf_counter()
    with threadpool_limits(limits=threads):
        status, message = "finished", ""
        for attempt in ("resume", "restart"):
            trainer = Trainer(config, load_splits(spec), checkpoint_path=checkpoint,
                              quiet=quiet, identity=trainer_identity(spec, threads))
            try:
                trainer.run(resume=True)
            except TrainingDiverged as error:
                status, message = "diverged", str(error)
            except CheckpointError as error:
                return _refused(config, "failed", (
                    f"{error}; set it aside (mv {checkpoint} {checkpoint}.bad) and run the same "
                    "command again to restart this run"))
            except CheckpointMismatch as error:
                if not overwrite or attempt == "restart":
                    return _refused(config, "refused", (
                        f"{error}. To restart this run with the current code, pass --overwrite"))
                checkpoint.unlink()  # --overwrite: start this run afresh
                continue
            break
    history = trainer.history
    _write_history(run_dir / "history.jsonl", history)
    final = trainer.final
    result = {
        "id": run_id(config), "status": status, "message": message,
        "config": identity["config"], "data": dataclasses.asdict(spec),
        "data_identity": identity["data"], "threads": threads, "code": version,
        "host": socket.gethostname(),
        "final": final,
        "summary": {
            "epochs_done": len(history),
            "updates": trainer.updates,
            "batch_fraction": config.batch_size / int(trainer.data.x_train.shape[0]),
            "test_acc": final.get("test_acc"),
            "train_acc": final.get("train_acc"),
            "gap": final.get("gap"),
            "best_test_acc": max((r["test_acc"] for r in history
                                  if r.get("test_acc") is not None), default=None),
        },
        "train_seconds": sum(r["seconds"] for r in history),
        "wall_seconds": time.perf_counter() - start,
    }
    if status == "finished" and certify:
        from specnorm_np.experiments.certify import certify_model

        data = trainer.data
        count = min(int(certify), int(data.x_test.shape[0]))
        with threadpool_limits(limits=threads):
            result["certified"] = certify_model(trainer.model, data.x_test[:count],
                                                data.y_test[:count])
        result["certified"]["test_examples"] = count
    if status == "finished":
        _save_weights(run_dir / "weights.npz", trainer.model)
    _write_json(result_path, result)
    if status == "finished" and not keep_checkpoints and checkpoint.exists():
        checkpoint.unlink()
    result["skipped"] = False
    return result


def _save_weights(path: Path, model: Any) -> None:
    """The final weights, compressed, float arrays as float16 (enough for later analyses:
    certified bounds, spectra); load with ``model.load_state_dict(dict(np.load(path)))``."""
    import io

    state = {name: value.astype(np.float16) if value.dtype.kind == "f" else value
             for name, value in model.state_dict().items()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **state)
    write_atomically(path, buffer.getvalue())


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
             quiet: bool = False, keep_checkpoints: bool = False,
             overwrite: bool = False, certify: int = CERTIFY_EXAMPLES) -> list[dict[str, Any]]:
    """Run every configuration; ``jobs`` > 1 in worker processes through joblib.

    ``backend="loky"``: local processes. ``backend="dask"``: joblib's Dask backend on the active
    Dask client, the scheduler at ``scheduler``, or a new ``LocalCluster``. The data location and
    ``out`` are resolved to absolute paths here, in the client, and sent with every task; a
    cluster's workers need the data at that same path and ``out`` on a file system they share.
    Results come back in the order of ``configs``. Holds ``out``'s lock throughout: a second
    ``compare`` on the same directory is refused (:class:`~specnorm_np.experiments.provenance.
    DirectoryLocked`).
    """
    if backend not in ("loky", "dask"):
        raise ValueError(f"unknown backend {backend!r}; choose 'loky' or 'dask'")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    spec = resolved(spec)
    load_splits(spec)  # fail early (missing data, bad sizes) in the main process
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(out):
        options = {"threads": threads, "keep_checkpoints": keep_checkpoints,
                   "overwrite": overwrite, "certify": certify}
        if jobs == 1 and backend == "loky":
            results = []
            for k, config in enumerate(configs, 1):
                result = run_one(config, spec, out, quiet=quiet, **options)
                results.append(result)
                if not quiet:
                    print(describe(result, k, len(configs)), flush=True)
            return results
        from joblib import Parallel, delayed, parallel_config

        if backend == "dask":
            calls = (delayed(_run_on_worker)(c, spec, str(out), **options) for c in configs)
            client = _dask_client(scheduler, jobs)
            with parallel_config(backend="dask", wait_for_workers_timeout=60):
                results = Parallel(n_jobs=jobs, verbose=0 if quiet else 10)(calls)
            if scheduler is None and client.cluster is not None and not quiet:
                print(f"dask dashboard: {client.dashboard_link}")
        else:
            calls = (delayed(run_one)(c, spec, str(out), quiet=True, parent_pid=os.getpid(),
                                      **options) for c in configs)
            with _sigterm_as_keyboard_interrupt():
                results = Parallel(n_jobs=jobs, backend="loky",
                                   verbose=0 if quiet else 10)(calls)
    if not quiet:
        for k, result in enumerate(results, 1):
            print(describe(result, k, len(results)))
    return list(results)


def resolved(spec: DataSpec) -> DataSpec:
    """``spec`` with the data root made absolute (where the data was found in this process)."""
    if spec.dataset != "cifar10":
        return spec
    from specnorm_np.data import find_cifar10_folder, resolve_data_root

    base, _ = resolve_data_root(spec.root)
    folder = find_cifar10_folder(base)
    return dataclasses.replace(spec, root=str((folder or base).resolve()))


def _run_on_worker(config: TrainConfig, spec: DataSpec, out: str, **options: Any) -> Any:
    """``run_one`` on a Dask worker; a failure names the worker and what it lacked."""
    try:
        return run_one(config, spec, out, quiet=True, **options)
    except Exception as error:
        where = f"{socket.gethostname()} (pid {os.getpid()})"
        raise RuntimeError(f"run {run_id(config)} failed on Dask worker {where}: "
                           f"{type(error).__name__}: {error}") from error


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
    """One line about a run, for the console."""
    if result["status"] != "finished":
        return f"[{index}/{total}] {result['id']}: {result['status']}: {result['message']}"
    summary = result["summary"]
    how = "already done" if result.get("skipped") else f"{result['wall_seconds']:.0f} s"
    return (f"[{index}/{total}] {result['id']}: test acc {summary['test_acc']:.3f}, "
            f"gap {summary['gap']:.3f}, {summary.get('updates', '?')} updates ({how})")


def load_results(out: str | Path) -> list[dict[str, Any]]:
    """Every run under ``out/runs`` with a result file, with its ``history`` attached.

    Raises :class:`ResultsError` naming the file when a result or history file is truncated
    or is not what ``compare`` writes, and ``FileNotFoundError`` when ``out`` has no runs.
    """
    runs = Path(out) / "runs"
    if not runs.is_dir():
        raise FileNotFoundError(f"{out}: no runs/ directory; run `python -m specnorm_np compare "
                                f"--out {out}` first")
    results = []
    for path in sorted(runs.glob("*/result.json")):
        result = read_json(path)
        missing = {"id", "status", "config", "summary"} - set(result) if isinstance(
            result, dict) else {"a JSON object"}
        if missing:
            raise ResultsError(f"{path}: not a compare result (missing {sorted(missing)}); "
                               "move it aside and run the compare command again")
        history_path = path.with_name("history.jsonl")
        history = []
        if history_path.exists():
            for number, line in enumerate(history_path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    history.append(json.loads(line))
                except ValueError as error:
                    raise ResultsError(f"{history_path}, line {number}: unreadable ({error}); "
                                       "move the run directory aside and run the compare "
                                       "command again") from None
        result["history"] = history
        results.append(result)
    return results
