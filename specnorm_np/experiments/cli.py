"""The command line: ``python -m specnorm_np {demo,compare,plot,gradcheck}``.

Examples::

    python -m specnorm_np demo
    python -m specnorm_np compare --model vgg --train-size 5000 --epochs 30 --seeds 0 1 \\
        --out results/cifar10 --jobs 2
    python -m specnorm_np plot results/cifar10
    python -m specnorm_np gradcheck
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

from specnorm_np.models import MODEL_NAMES
from specnorm_np.train import METHODS

__all__ = ["build_parser", "main", "default_large_batch"]

PAPER_METHODS = ("vanilla", "decay", "adversarial", "spectral")


def default_large_batch(train_size: int) -> int:
    """The paper's 4096 of 50,000 (8.2%) scaled to the subset, as a power of two (>= 128)."""
    return max(128, 2 ** round(math.log2(max(train_size, 1) * 4096 / 50000)))


def _items(values: Sequence[str], kind: type = str) -> list:
    """Accept both ``--x a b`` and ``--x a,b``."""
    return [kind(v) for value in values for v in value.split(",") if v]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m specnorm_np",
        description="Spectral norm regularization (Yoshida & Miyato 2017) in pure NumPy.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="vanilla vs spectral on a CIFAR-10 subset (~3 min, 2 cores)")
    demo.add_argument("--out", default="specnorm_demo", help="output directory")
    demo.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/")
    demo.add_argument("--no-download", action="store_true",
                      help="never download CIFAR-10 (fall back to the digits instead)")
    demo.add_argument("--epochs", type=int, default=15)
    demo.add_argument("--train-size", type=int, default=2000)
    demo.add_argument("--test-size", type=int, default=2000)
    demo.add_argument("--batch-size", type=int, default=250)
    demo.add_argument("--lr", type=float, default=0.1)
    demo.add_argument("--model", choices=MODEL_NAMES, default="vgg-bn")
    demo.add_argument("--threads", type=int, default=1,
                      help="BLAS threads (default 1; 0 = the BLAS library's default)")

    compare = sub.add_parser("compare", help="the paper's grid: methods x batch sizes x seeds")
    compare.add_argument("--methods", nargs="+", default=list(PAPER_METHODS),
                         help=f"from {', '.join(METHODS)} (default: the paper's four)")
    compare.add_argument("--batch-sizes", nargs="+", default=None,
                         help="default: 64 and the paper's 4096/50000 scaled to --train-size")
    compare.add_argument("--model", choices=MODEL_NAMES, default="vgg")
    compare.add_argument("--width", type=int, default=None, help="model width (see models.py)")
    compare.add_argument("--dataset", choices=("cifar10", "digits"), default="cifar10")
    compare.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/")
    compare.add_argument("--download", action="store_true", help="download CIFAR-10 if absent")
    compare.add_argument("--train-size", type=int, default=None,
                         help="training images, stratified (default 5000; digits: all)")
    compare.add_argument("--test-size", type=int, default=None, help="default: all test images")
    compare.add_argument("--data-seed", type=int, default=0, help="seed of the subsets")
    compare.add_argument("--epochs", type=int, default=30, help="epochs at the smallest batch")
    compare.add_argument("--large-batch-epochs", type=int, default=None,
                         help="epochs at larger batches (default --epochs; the paper doubles)")
    compare.add_argument("--lr", type=float, default=0.01,
                         help="initial learning rate at the smallest batch (paper: 0.01)")
    compare.add_argument("--large-batch-lr-factor", type=float, default=10.0,
                         help="initial LR multiplier at larger batches (paper: 10)")
    compare.add_argument("--seeds", nargs="+", default=["0"])
    compare.add_argument("--metric-examples", type=int, default=1000,
                         help="train and test images for the input-gradient norms")
    compare.add_argument("--hessian-examples", type=int, default=500)
    compare.add_argument("--hessian-iterations", type=int, default=20)
    compare.add_argument("--no-hessian", action="store_true")
    compare.add_argument("--alpha", type=float, default=None,
                         help="threshold of gap_alpha (default: chosen per batch size)")
    compare.add_argument("--out", required=True, help="output directory")
    compare.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    compare.add_argument("--threads", type=int, default=1,
                         help="BLAS threads per run (results are identical for a fixed value)")
    compare.add_argument("--backend", choices=("loky", "dask"), default="loky")
    compare.add_argument("--scheduler", default=None,
                         help="Dask scheduler address (default: a local cluster)")
    compare.add_argument("--keep-checkpoints", action="store_true")
    compare.add_argument("--quiet", action="store_true")

    plot = sub.add_parser("plot", help="redraw tables and figures from a compare directory")
    plot.add_argument("directory")
    plot.add_argument("--layer", default=None, help="weight for Fig. 4 (default: largest)")
    plot.add_argument("--alpha", type=float, default=None)

    sub.add_parser("gradcheck", help="numerical gradient check of every layer and regularizer")

    certify = sub.add_parser(
        "certify", help="certified per-layer norm intervals, Lipschitz bound and certified "
        "accuracy of every run with weights.npz in a compare directory")
    certify.add_argument("directory")
    certify.add_argument("--test-size", type=int, default=500,
                         help="test images for the certified accuracy (multiple of 10)")
    certify.add_argument("--radii", nargs="+", default=None,
                         help="l2 radii (default 0 0.01 0.03 0.1 0.3)")
    certify.add_argument("--local-examples", type=int, default=100,
                         help="test images at which sigma(J(x)) is measured")
    certify.add_argument("--power-iterations", type=int, default=None,
                         help="steps of each layer's lower bound (default 100)")
    certify.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/")
    certify.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    return parser


def _compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from specnorm_np.experiments.compare import build_configs, load_results, run_grid
    from specnorm_np.experiments.datasets import DataSpec, load_splits

    methods = _items(args.methods)
    for method in methods:
        if method not in METHODS:
            parser.error(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    train_size = args.train_size
    if train_size is None and args.dataset == "cifar10":
        train_size = 5000
    spec = DataSpec(args.dataset, train_size, args.test_size, args.data_seed, args.data_root,
                    args.download)
    n_train = int(load_splits(spec).x_train.shape[0])
    batches = (_items(args.batch_sizes, int) if args.batch_sizes
               else [64, default_large_batch(n_train)])
    too_big = [b for b in batches if b > n_train]
    if too_big:
        parser.error(f"batch size(s) {too_big} larger than the training set ({n_train} images)")
    configs = build_configs(
        methods, batches, _items(args.seeds, int), lr=args.lr,
        large_batch_lr_factor=args.large_batch_lr_factor, epochs=args.epochs,
        large_batch_epochs=args.large_batch_epochs, model=args.model, width=args.width,
        metric_examples=args.metric_examples, hessian=not args.no_hessian,
        hessian_examples=args.hessian_examples, hessian_iterations=args.hessian_iterations)
    if not args.quiet:
        print(f"{len(configs)} runs: {methods} x B={batches} x seeds {args.seeds}; "
              f"{args.dataset} {n_train} training images; out {args.out}", flush=True)
    start = time.perf_counter()
    run_grid(configs, spec, args.out, jobs=args.jobs, threads=args.threads,
             backend=args.backend, scheduler=args.scheduler, quiet=args.quiet,
             keep_checkpoints=args.keep_checkpoints)
    if not args.quiet:
        print(f"grid done in {time.perf_counter() - start:.0f} s", flush=True)
    return _report(load_results(args.out), args.out, args.alpha, None, quiet=args.quiet)


def _report(results: list, out: str, alpha: float | None, layer: str | None,
            quiet: bool = False) -> int:
    from specnorm_np.experiments.plots import plot_all
    from specnorm_np.experiments.summary import correlations, format_table, write_summary

    table = write_summary(results, out, alpha)
    figures = plot_all(results, out, layer)
    if not quiet:
        print(format_table(table))
        for c in correlations(results):
            print(f"gap vs input-gradient norm ({c['split']}, {c['aggregation']}): "
                  f"Pearson r = {c['pearson_r']:.3f} over {c['points']} points")
        print(f"wrote {out}/summary.csv, summary_long.csv, correlations.csv and "
              + ", ".join(f.name for f in figures))
    diverged = [r["id"] for r in results if r["status"] != "finished"]
    if diverged:
        print(f"warning: {len(diverged)} run(s) diverged: {', '.join(diverged)}",
              file=sys.stderr)
    return 0


def _certify(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits

    from specnorm_np.experiments.certify import DEFAULT_RADII, certify_directory
    from specnorm_np.spectral.bounds import DEFAULT_POWER_ITERATIONS

    radii = _items(args.radii, float) if args.radii else list(DEFAULT_RADII)
    with threadpool_limits(limits=args.threads or None):
        report = certify_directory(
            args.directory, test_size=args.test_size, radii=radii, root=args.data_root,
            local_examples=args.local_examples, quiet=False,
            power_iterations=args.power_iterations or DEFAULT_POWER_ITERATIONS)
    for run, reason in report["skipped"].items():
        print(f"{run}: skipped ({reason})")
    print(f"wrote {args.directory}/certified.json"
          + (f" and {report['figure']}" if report.get("figure") else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from specnorm_np.data import DatasetError

    try:
        if args.command == "demo":
            from specnorm_np.experiments.demo import run_demo

            run_demo(args.out, root=args.data_root, train_size=args.train_size,
                     test_size=args.test_size, epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.lr, model=args.model, download=not args.no_download,
                     threads=args.threads or None)
            return 0
        if args.command == "compare":
            return _compare(args, parser)
        if args.command == "certify":
            return _certify(args)
        if args.command == "plot":
            from specnorm_np.experiments.compare import load_results

            return _report(load_results(args.directory), args.directory, args.alpha, args.layer)
        from specnorm_np.experiments.gradcheck_table import format_rows, run_checks

        rows = run_checks()
        print(format_rows(rows))
        return 0 if all(result is not None for _, result, _ in rows) else 1
    except (DatasetError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM during `compare` (see compare.run_grid)
        if args.command == "compare":
            print("interrupted: finished runs are kept; run the same command again to resume "
                  "the others from their checkpoints", file=sys.stderr)
        return 130
