"""Speed and memory of specnorm_np against PyTorch CPU.

Run it from a shell::

    python -m specnorm_np.bench                       # all three networks, batch 128
    python -m specnorm_np.bench --threads 2 --nets cnn --steps 20 --json

or from Python::

    from specnorm_np import bench
    results = bench.run(batch=128, threads=2, nets=["mlp"])
    print(bench.format_table(results))

It times a float32 training step (forward, softmax cross-entropy, backward, spectral norm
regularizer, Nesterov SGD) and an inference pass of three reference networks (an MLP, a 4-conv
CNN, the CNN with BatchNorm), interleaved with the same networks in PyTorch when it is installed,
and measures each network's peak resident memory in a process of its own.

Modules: :mod:`~specnorm_np.bench.networks` (the networks, both libraries),
:mod:`~specnorm_np.bench.steps` (one training step / inference pass),
:mod:`~specnorm_np.bench.runner` (timing), :mod:`~specnorm_np.bench.memory` (memory probes),
:mod:`~specnorm_np.bench.report` (table and command line).
"""

from specnorm_np.bench.report import format_table, main
from specnorm_np.bench.runner import TARGETS, run, torch_available

__all__ = ["run", "format_table", "main", "TARGETS", "torch_available"]
