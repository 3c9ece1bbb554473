"""Peak resident memory of one network, measured in a process of its own.

The peak resident set size (RSS) of a process only ever grows, so networks measured in one
process would hide each other's peaks, and a NumPy network measured in a process that has
imported PyTorch would carry PyTorch's few hundred MB of libraries. :func:`measure` therefore
starts a fresh Python for every (network, backend, batch size)::

    python -m specnorm_np.bench.memory '{"network": "cnn", "backend": "numpy", "batch": 128, ...}'

The child (:func:`probe`) records its RSS after the imports (the baseline), builds the network
and a batch, runs a few training steps and an inference pass, and prints one JSON line with the
baseline and the peak. The peak is the kernel's high-water mark ``VmHWM`` from
``/proc/self/status`` (Linux), or ``resource.getrusage(...).ru_maxrss`` elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

__all__ = ["measure", "probe", "current_rss", "peak_rss"]

MIB = 1024 * 1024


def _status_field(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None where /proc is unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss() -> int:
    """Resident set size of this process now, in bytes (0 if unknown)."""
    rss = _status_field("VmRSS")
    if rss is None:
        try:
            import psutil

            rss = int(psutil.Process().memory_info().rss)
        except ImportError:
            rss = 0
    return rss


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes."""
    peak = _status_field("VmHWM")
    if peak is None:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB else
    return peak


def probe(network: str, backend: str, batch: int, threads: int, steps: int = 3) -> dict[str, Any]:
    """Run ``network`` on ``backend`` in *this* process and report its memory (bytes)."""
    from threadpoolctl import threadpool_limits

    from specnorm_np.bench.steps import NumpyTrainer, TorchTrainer, make_batch

    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    baseline = current_rss()
    with threadpool_limits(limits=threads):
        x, y = make_batch(batch)
        if backend == "numpy":
            trainer: Any = NumpyTrainer(network)
        elif backend == "torch":
            trainer = TorchTrainer(network)
            x, y = trainer.to_input(x, y)
        else:
            raise ValueError(f"bench.memory: backend must be 'numpy' or 'torch', got {backend!r}")
        for _ in range(steps):
            trainer.train_step(x, y)
        trainer.infer(x)
        trainer.train_step(x, y)
    return {
        "network": network,
        "backend": backend,
        "batch": batch,
        "baseline_bytes": baseline,
        "peak_bytes": peak_rss(),
    }


def measure(
    network: str, backend: str, batch: int, threads: int, steps: int = 3, timeout: float = 600
) -> dict[str, Any]:
    """Run :func:`probe` in a fresh Python process and return its result (bytes)."""
    request = json.dumps(
        {"network": network, "backend": backend, "batch": batch, "threads": threads,
         "steps": steps}
    )
    env = dict(os.environ)
    # the child must not inherit a thread count that differs from ours through OpenMP/BLAS vars
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[variable] = str(threads)
    completed = subprocess.run(
        [sys.executable, "-m", "specnorm_np.bench.memory", request],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"bench.memory: the probe of {network}/{backend} at batch {batch} failed "
            f"(exit {completed.returncode}):\n{completed.stderr.strip()[-2000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m specnorm_np.bench.memory '<json request>'", file=sys.stderr)
        return 2
    request = json.loads(argv[0])
    print(json.dumps(probe(**request)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
