"""The command line: ``python -m specnorm_np {demo,compare,plot,gradcheck}``.

Also installed as the console script ``specnorm-np``. Examples::

    python -m specnorm_np demo
    python -m specnorm_np compare --model vgg-bn --train-size 5000 --epochs 30 --seeds 0 1 \\
        --out results/cifar10 --jobs 2
    python -m specnorm_np plot results/cifar10
    python -m specnorm_np gradcheck

``--help`` of each command lists every option with its default, examples, and where the data
is looked for.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

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


def _number(kind: type, low: float, inclusive: bool = True, what: str = "") -> Any:
    """An argparse ``type``: ``kind`` (int/float) at least (or above) ``low``, finite."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        ok = math.isfinite(value) and (value >= low if inclusive else value > low)
        if not ok:
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}{what}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE_INT = _number(int, 0)
POSITIVE_FLOAT = _number(float, 0, inclusive=False)


def _int_list(text: str) -> list[int]:
    """``"0,1 2"``-style lists of integers (argparse type for one item)."""
    values = []
    for part in text.split(","):
        if part:
            try:
                values.append(int(part))
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected integers, got {part!r}") from None
    return values


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults appended to every help text that does not state its own (and not for
    None/False defaults, whose meaning the text gives); description and epilog kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "(default" in text \
                or "default:" in text:
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Text with line breaks (examples, lists) as written; other text wrapped."""
        if "\n" in text:
            return argparse.RawDescriptionHelpFormatter._fill_text(self, text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def _program() -> str:
    """How the user called us: the console script or ``python -m specnorm_np``."""
    import os

    return "specnorm-np" if os.path.basename(sys.argv[0] or "") == "specnorm-np" else \
        "python -m specnorm_np"


DATA_LOOKUP = """\
where CIFAR-10 is looked for (the first that is set is the only place searched):
  1. --data-root DIR
  2. the environment variable SPECNORM_DATA=DIR
  3. the cache ~/.cache/specnorm_np
DIR holds the folder cifar-10-batches-py/ (or is that folder). Nothing there: add --download to
fetch the official archive (170 MB, MD5-checked) into DIR; every batch's decoded pixels and
labels are checked against the official SHA-256 digests on load."""


def _examples(prog: str, *lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {prog} {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    from specnorm_np.experiments.demo import DEMO_SETTINGS

    prog = _program()
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=_HelpFormatter,
        description="Spectral norm regularization (Yoshida & Miyato 2017) in pure NumPy: a "
                    "two-minute demo, the paper's comparison grid, its figures, and gradient "
                    "checks. Also installed as the console script `specnorm-np`.",
        epilog=_examples(prog, "demo", "compare --train-size 2000 --test-size 2000 --epochs 5 "
                         "--batch-sizes 64 \\\n      --methods vanilla spectral --no-hessian "
                         "--out results/quick",
                         "plot results/quick", "gradcheck")
        + f"\n\n{DATA_LOOKUP}\n\nRun `{prog} COMMAND --help` for a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = DEMO_SETTINGS
    demo = sub.add_parser(
        "demo", formatter_class=_HelpFormatter,
        help="vanilla vs spectral on a CIFAR-10 subset (about 1.5 minutes on 2 cores)",
        description=f"Train the `{d['model']}` model twice on {d['train_size']:,} CIFAR-10 "
                    f"images (vanilla, then with the spectral penalty, λ = "
                    f"{d['spectral_lambda']:g}), print a table "
                    "(accuracy, gap, σ of every layer, input-gradient norm on test data) and "
                    "write demo.png. Without CIFAR-10 (and no network) it falls back to "
                    "scikit-learn's 8x8 digits and says which settings change.",
        epilog=_examples(prog, "demo", "demo --data-root ~/datasets --out my_demo",
                         "demo --epochs 40 --train-size 5000") + f"\n\n{DATA_LOOKUP}")
    demo.add_argument("--out", default="specnorm_demo",
                      help="output directory (runs, demo.png); created if needed")
    demo.add_argument("--data-root", default=None,
                      help="directory holding cifar-10-batches-py/ (must exist unless "
                           "--download; default: $SPECNORM_DATA, else ~/.cache/specnorm_np)")
    fetch = demo.add_mutually_exclusive_group()
    fetch.add_argument("--download", action="store_true",
                       help="allow a --data-root that does not exist yet: it is created and "
                            "CIFAR-10 downloaded into it (an existing data root, or the "
                            "default cache, is downloaded into whenever CIFAR-10 is absent, "
                            "unless --no-download)")
    fetch.add_argument("--no-download", action="store_true",
                       help="never download CIFAR-10 (fall back to the digits instead)")
    demo.add_argument("--model", choices=MODEL_NAMES, default=d["model"],
                      help="network (see specnorm_np/models.py)")
    demo.add_argument("--epochs", type=POSITIVE_INT, default=d["epochs"], help="epochs per run")
    demo.add_argument("--train-size", type=_number(int, 10, what=" (one image per class)"),
                      default=d["train_size"], help="CIFAR-10 training images (stratified)")
    demo.add_argument("--test-size", type=_number(int, 10, what=" (one image per class)"),
                      default=d["test_size"], help="CIFAR-10 test images (stratified)")
    demo.add_argument("--batch-size", type=POSITIVE_INT, default=d["batch_size"],
                      help="minibatch size")
    demo.add_argument("--lr", type=POSITIVE_FLOAT, default=d["lr"],
                      help="initial learning rate (Nesterov SGD, ×0.1 at 50%% and 75%%)")
    demo.add_argument("--spectral-lambda", type=POSITIVE_FLOAT, default=d["spectral_lambda"],
                      help="λ of the spectral penalty (the paper: 0.01; the demo uses more, "
                           "see the README)")
    demo.add_argument("--threads", type=NON_NEGATIVE_INT, default=1,
                      help="BLAS threads (0 = the BLAS library's default)")

    compare = sub.add_parser(
        "compare", formatter_class=_HelpFormatter,
        help="the paper's grid: methods x batch sizes x seeds",
        description="Train every (method, batch size, seed) and write per-run results, "
                    "summary tables, statistics.json and figures to --out. Re-running the same "
                    "command skips finished runs and resumes interrupted ones; a different "
                    "configuration in the same --out is refused (see --overwrite).",
        epilog=_examples(
            prog,
            "compare --train-size 2000 --test-size 2000 --epochs 5 --batch-sizes 64 \\\n"
            "      --methods vanilla spectral --no-hessian --out results/quick   # ~2 minutes",
            "compare --download --out results/paper4 --seeds 0 1 2 --jobs 2",
            "compare --dataset digits --model mlp --epochs 10 --out results/digits",
            "compare --backend dask --scheduler tcp://10.0.0.5:8786 --jobs 8 \\\n"
            "      --data-root /shared/data --out /shared/results/grid")
        + f"\n\n{DATA_LOOKUP}\n\nOn a Dask cluster every worker needs the data at the same "
          "path as the client (the\nclient sends the location it resolved) and --out on a "
          "file system that all of them share.")
    compare.add_argument("--methods", nargs="+", default=list(PAPER_METHODS),
                         help=f"methods, from {', '.join(METHODS)} (default: the paper's four)")
    compare.add_argument("--batch-sizes", nargs="+", type=_int_list, default=None,
                         help="batch sizes (default: 64 and the paper's 4096/50000 scaled to "
                              "--train-size, as a power of two >= 128)")
    compare.add_argument("--model", choices=MODEL_NAMES, default="vgg-bn",
                         help="network (see specnorm_np/models.py); vgg-bn trains at the "
                              "paper's learning rates, plain vgg trains poorly at them")
    compare.add_argument("--width", type=POSITIVE_INT, default=None,
                         help="model width (default: per model, see models.py; vgg: 16)")
    compare.add_argument("--dataset", choices=("cifar10", "digits"), default="cifar10",
                         help="data set (digits: scikit-learn's 8x8 images, for quick tests)")
    compare.add_argument("--data-root", default=None,
                         help="directory holding cifar-10-batches-py/ (must exist unless "
                              "--download; default: $SPECNORM_DATA, else ~/.cache/specnorm_np)")
    compare.add_argument("--download", action="store_true",
                         help="download CIFAR-10 (170 MB) into the data root if absent")
    compare.add_argument("--train-size", type=_number(int, 10, what=" (one image per class)"),
                         default=None,
                         help="training images, stratified (default: 5000 for cifar10, all "
                              "1,348 for digits)")
    compare.add_argument("--test-size", type=_number(int, 10, what=" (one image per class)"),
                         default=None, help="test images, stratified (default: all)")
    compare.add_argument("--data-seed", type=NON_NEGATIVE_INT, default=0,
                         help="seed of the subsets")
    compare.add_argument("--epochs", type=POSITIVE_INT, default=30,
                         help="epochs at the smallest batch size")
    length = compare.add_mutually_exclusive_group()
    length.add_argument("--large-batch-epochs", type=POSITIVE_INT, default=None,
                        help="epochs at larger batches (default: --epochs; the paper doubles)")
    length.add_argument("--large-batch-updates", type=POSITIVE_INT, default=None,
                        help="length of the larger-batch runs in optimizer updates instead: "
                             "the fewest whole epochs that make at least this many (the paper's "
                             "B=4096 runs make about 2,400)")
    compare.add_argument("--lr", type=POSITIVE_FLOAT, default=0.01,
                         help="initial learning rate at the smallest batch (paper: 0.01)")
    compare.add_argument("--large-batch-lr-factor", type=POSITIVE_FLOAT, default=10.0,
                         help="initial LR multiplier at larger batches (paper: 10)")
    compare.add_argument("--warmup-epochs", type=NON_NEGATIVE_INT, default=0,
                         help="linear LR warm-up over this many epochs (0: none, as in the "
                              "paper; using it is a deviation to state)")
    compare.add_argument("--augment", action="store_true",
                         help="random crop (4-pixel zero padding) and horizontal flip per batch, "
                              "drawn from the run's seed (the paper augments STL-10 only)")
    compare.add_argument("--eval-every", type=POSITIVE_INT, default=1,
                         help="evaluate the curves every K epochs (the last epoch always)")
    compare.add_argument("--curve-examples", type=POSITIVE_INT, default=None,
                         help="evaluate the per-epoch curves on this many training and test "
                              "images (default: all); final numbers always use the full sets")
    compare.add_argument("--seeds", nargs="+", type=_int_list, default=[[0]],
                         help="seeds (default: 0); each gives its own initial weights and batch "
                              "order, shared by all methods")
    compare.add_argument("--metric-examples", type=POSITIVE_INT, default=1000,
                         help="training and test images for the input-gradient norms")
    compare.add_argument("--hessian-examples", type=POSITIVE_INT, default=500,
                         help="examples for the top Hessian eigenvalue (at most "
                              "--metric-examples)")
    compare.add_argument("--hessian-iterations", type=POSITIVE_INT, default=20,
                         help="power-iteration steps for the top Hessian eigenvalue (two "
                              "gradient passes each)")
    compare.add_argument("--no-hessian", action="store_true",
                         help="skip the Hessian estimate (the slowest metric; Fig. 3 empty)")
    compare.add_argument("--certify-examples", type=NON_NEGATIVE_INT, default=500,
                         help="test images for each finished run's certified accuracy, with the "
                              "per-layer true-norm intervals and the certified Lipschitz bound "
                              "(0: skip)")
    compare.add_argument("--alpha", type=float, default=None,
                         help="threshold of gap_alpha (default: chosen per batch size)")
    compare.add_argument("--out", required=True,
                         help="output directory (created if needed; one configuration per run)")
    compare.add_argument("--overwrite", action="store_true",
                         help="delete and redo runs in --out whose configuration (or, for "
                              "interrupted runs, numerics code) differs; without it they are "
                              "refused and kept")
    compare.add_argument("--jobs", type=POSITIVE_INT, default=1,
                         help="runs in parallel (processes, or Dask tasks)")
    compare.add_argument("--threads", type=NON_NEGATIVE_INT, default=1,
                         help="BLAS threads per run (results are identical for a fixed value; "
                              "0 = the BLAS library's default)")
    compare.add_argument("--backend", choices=("loky", "dask"), default="loky",
                         help="how --jobs run: local processes (loky) or Dask")
    compare.add_argument("--scheduler", default=None,
                         help="Dask scheduler address, e.g. tcp://127.0.0.1:8786 (default: a "
                              "new local cluster)")
    compare.add_argument("--keep-checkpoints", action="store_true",
                         help="keep each finished run's checkpoint.npz")
    compare.add_argument("--quiet", action="store_true", help="no progress output")

    plot = sub.add_parser(
        "plot", formatter_class=_HelpFormatter,
        help="redraw tables and figures from a compare directory",
        description="Read DIRECTORY/runs/*/result.json and rewrite summary.csv, "
                    "summary_long.csv, correlations.csv, statistics.json and fig1-fig4. Runs "
                    "of different data sets or models are never mixed: the command refuses "
                    "and lists them.",
        epilog=_examples(prog, "plot results/quick", "plot results/quick --layer 0.weight"))
    plot.add_argument("directory", help="an output directory of compare")
    plot.add_argument("--layer", default=None,
                      help="weight for Fig. 4 by parameter name, as in result.json (e.g. "
                           "0.weight; a wrong name lists them all; default: the one with the "
                           "most singular values)")
    plot.add_argument("--alpha", type=float, default=None,
                      help="threshold of gap_alpha (default: chosen per batch size)")

    sub.add_parser(
        "gradcheck", formatter_class=_HelpFormatter,
        help="numerical gradient check of every layer and regularizer (about a minute)",
        description="Compare every layer's, model's and regularizer's analytic gradient with "
                    "central differences in float64 and print a table of relative errors; "
                    "exit 1 when any check fails.",
        epilog=_examples(prog, "gradcheck"))

    certify = sub.add_parser(
        "certify", formatter_class=_HelpFormatter,
        help="certified per-layer norm intervals, Lipschitz bound and certified accuracy of "
             "every run with weights.npz in a compare directory",
        description="For every finished run of DIRECTORY with saved weights: an interval "
                    "[lower, certified upper] for each layer's true operator norm, the "
                    "network's certified l2 Lipschitz bound and the certified accuracy at a few "
                    "radii; writes certified.json and fig5_true_norms.png.",
        epilog=_examples(prog, "certify results/study-mlp",
                         "certify results/quick --test-size 200 --radii 0 0.01 0.1"))
    certify.add_argument("directory", help="an output directory of compare")
    certify.add_argument("--test-size", type=POSITIVE_INT, default=500,
                         help="test images for the certified accuracy (multiple of 10)")
    certify.add_argument("--radii", nargs="+", default=None,
                         help="l2 radii (default: 0 0.01 0.03 0.1 0.3)")
    certify.add_argument("--local-examples", type=POSITIVE_INT, default=100,
                         help="test images at which sigma(J(x)) is measured")
    certify.add_argument("--power-iterations", type=POSITIVE_INT, default=None,
                         help="steps of each layer's lower bound (default: 100)")
    certify.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/")
    certify.add_argument("--threads", type=NON_NEGATIVE_INT, default=1,
                         help="BLAS threads (0 = the BLAS library's default)")
    return parser


def _compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from specnorm_np.experiments.compare import build_configs, load_results, run_grid
    from specnorm_np.experiments.datasets import DataSpec, load_splits

    methods = _items(args.methods)
    for method in methods:
        if method not in METHODS:
            parser.error(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file; give a directory (it is created if needed)")
    if args.data_root is not None and not Path(args.data_root).is_dir() and not args.download:
        parser.error(f"--data-root {args.data_root}: no such directory (give the folder that "
                     "holds cifar-10-batches-py/, or add --download to download it there)")
    import importlib.util

    needs = ["joblib"] if args.jobs > 1 or args.backend == "dask" else []
    needs += ["distributed"] if args.backend == "dask" else []
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        extra = "dask" if args.backend == "dask" else "parallel"
        parser.error(f"--jobs {args.jobs} --backend {args.backend} needs {' and '.join(missing)}"
                     f", which is not installed: pip install \"specnorm_np[{extra}]\" (or "
                     "run with --jobs 1)")
    seeds = [seed for group in args.seeds for seed in group]
    if any(seed < 0 for seed in seeds):
        parser.error(f"--seeds must be >= 0, got {seeds}")
    batches = [b for group in args.batch_sizes for b in group] if args.batch_sizes else None
    if batches is not None and any(b < 1 for b in batches):
        parser.error(f"--batch-sizes must be >= 1, got {batches}")
    if not methods or not seeds or batches == []:
        parser.error("need at least one method, one seed and one batch size")
    train_size = args.train_size
    if train_size is None and args.dataset == "cifar10":
        train_size = 5000
    spec = DataSpec(args.dataset, train_size, args.test_size, args.data_seed, args.data_root,
                    args.download)
    n_train = int(load_splits(spec).x_train.shape[0])
    batches = batches or [64, default_large_batch(n_train)]
    too_big = [b for b in batches if b > n_train]
    if too_big:
        parser.error(f"batch size(s) {too_big} larger than the training set ({n_train} images)")
    if args.warmup_epochs >= args.epochs:
        parser.error(f"--warmup-epochs ({args.warmup_epochs}) must be fewer than --epochs "
                     f"({args.epochs})")
    try:
        configs = build_configs(
            methods, batches, seeds, lr=args.lr,
            large_batch_lr_factor=args.large_batch_lr_factor, epochs=args.epochs,
            large_batch_epochs=args.large_batch_epochs,
            large_batch_updates=args.large_batch_updates, train_size=n_train,
            model=args.model, width=args.width, metric_examples=args.metric_examples,
            hessian=not args.no_hessian, hessian_examples=args.hessian_examples,
            hessian_iterations=args.hessian_iterations, augment=args.augment,
            eval_every=args.eval_every, curve_examples=args.curve_examples,
            warmup_epochs=args.warmup_epochs)
    except ValueError as error:
        parser.error(str(error))
    if not args.quiet:
        lengths = sorted({(c.batch_size, c.epochs) for c in configs})
        print(f"{len(configs)} runs: {methods} x B={batches} x seeds {seeds}; "
              f"{args.dataset} {n_train} training images; epochs per batch size "
              + ", ".join(f"B={b}: {e}" for b, e in lengths) + f"; out {args.out}", flush=True)
    start = time.perf_counter()
    results = run_grid(configs, spec, args.out, jobs=args.jobs, threads=args.threads or None,
                       backend=args.backend, scheduler=args.scheduler, quiet=args.quiet,
                       keep_checkpoints=args.keep_checkpoints, overwrite=args.overwrite,
                       certify=args.certify_examples)
    if not args.quiet:
        print(f"grid done in {time.perf_counter() - start:.0f} s", flush=True)
    code = _report(load_results(args.out), args.out, args.alpha, None, quiet=args.quiet)
    blocked = [r for r in results if r["status"] in ("refused", "failed")]
    for result in blocked:
        print(f"error: {result['id']}: {result['message']}", file=sys.stderr)
    return 1 if blocked else code


def _report(results: list, out: str, alpha: float | None, layer: str | None,
            quiet: bool = False) -> int:
    from tqdm.auto import tqdm

    from specnorm_np.experiments import plots
    from specnorm_np.experiments.summary import correlations, format_table, write_summary

    plots.check_one_setting(results, out)  # before anything is written
    steps = ["tables and statistics", *plots.FIGURE_NAMES]
    figures = []
    with tqdm(steps, desc="summary", leave=False, disable=quiet, unit="file") as bar:
        for step in bar:
            bar.set_description_str(f"writing {step}")
            if step == steps[0]:
                table = write_summary(results, out, alpha)
            else:
                figures += plots.plot_all(results, out, layer, only=step)
    if not quiet:
        print(format_table(table))
        for c in correlations(results):
            print(f"gap vs input-gradient norm ({c['split']}, {c['aggregation']}): "
                  f"Pearson r = {c['pearson_r']:.3f} over {c['points']} points")
        print(f"wrote {out}/summary.csv, summary_long.csv, correlations.csv, statistics.json"
              + (" and " + ", ".join(f.name for f in figures) if figures
                 else " (no figures: no run finished)"))
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


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from specnorm_np.experiments.demo import run_demo

    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir() \
            and not args.download:
        parser.error(f"--data-root {args.data_root}: no such directory (give the folder that "
                     "holds cifar-10-batches-py/, or add --download to download it there)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file; give a directory (it is created if needed)")
    if args.batch_size > args.train_size:
        parser.error(f"--batch-size {args.batch_size} is larger than --train-size "
                     f"{args.train_size}")
    run_demo(args.out, root=args.data_root, train_size=args.train_size,
             test_size=args.test_size, epochs=args.epochs, batch_size=args.batch_size,
             lr=args.lr, model=args.model, spectral_lambda=args.spectral_lambda,
             download=not args.no_download, threads=args.threads or None)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from specnorm_np.data import DatasetError
    from specnorm_np.experiments.compare import ResultsError
    from specnorm_np.experiments.plots import MixedRunsError
    from specnorm_np.experiments.provenance import DirectoryLocked

    try:
        if args.command == "demo":
            return _demo(args, parser)
        if args.command == "compare":
            return _compare(args, parser)
        if args.command == "certify":
            return _certify(args)
        if args.command == "plot":
            from specnorm_np.experiments.compare import load_results

            results = load_results(args.directory)
            if not any(r["status"] == "finished" for r in results):
                statuses = ", ".join(f"{r['id']}: {r['status']}" for r in results) or "none"
                print(f"error: {args.directory}: no finished run to summarize (runs: "
                      f"{statuses}); run compare first", file=sys.stderr)
                return 2
            try:
                return _report(results, args.directory, args.alpha, args.layer)
            except ValueError as error:  # --layer that no run has, runs of mixed settings
                print(f"error: {error}", file=sys.stderr)
                return 2
        from specnorm_np.experiments.gradcheck_table import format_rows, run_checks

        rows = run_checks(progress=True)
        print(format_rows(rows))
        return 0 if all(result is not None for _, result, _ in rows) else 1
    except (DatasetError, FileNotFoundError, ResultsError, DirectoryLocked,
            MixedRunsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if getattr(args, "backend", None) != "dask":
            raise
        # a task that failed on a Dask worker (compare._run_on_worker names the worker)
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM during `compare` (see compare.run_grid)
        if args.command == "compare":
            print("interrupted: finished runs are kept; run the same command again to resume "
                  "the others from their checkpoints", file=sys.stderr)
        return 130
