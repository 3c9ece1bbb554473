"""The command line (``python -m specnorm_np.bench``) and the readable table of results."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from specnorm_np.bench.networks import NETWORKS
from specnorm_np.bench.runner import run

__all__ = ["format_table", "main"]

MIB = 1024 * 1024


def _interval(ablation: dict[str, Any]) -> str:
    low, high = ablation.get("share_interval", (float("nan"), float("nan")))
    return f"[{low:.1%}, {high:.1%}]"


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "MISSED")


def _timing_rows(name: str, entry: dict[str, Any], batch: int) -> list[list[str]]:
    rows = []
    for phase in ("train", "inference"):
        data = entry[phase]
        ours = data["numpy"]
        row = [name if phase == "train" else "", phase,
               f"{ours['median_seconds'] * 1e3:.1f}", "-", f"{ours['images_per_second']:.0f}",
               "-", "-", "-", ""]
        if "torch" in data:
            theirs = data["torch"]
            row[3] = f"{theirs['median_seconds'] * 1e3:.1f}"
            row[5] = f"{theirs['images_per_second']:.0f}"
            row[6] = f"{data['ratio']:.2f}x"
            row[7] = f"<= {data['target']:.2f}x"
            row[8] = _verdict(data["met"])
        rows.append(row)
    return rows


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_table(results: dict[str, Any]) -> str:
    """The results of :func:`specnorm_np.bench.run` as plain-text tables."""
    settings, machine = results["settings"], results["machine"]
    batch = settings["batch"]
    out = [
        f"specnorm_np benchmark: batch {batch}, {settings['threads']} thread(s), float32, "
        f"median of {settings['steps']} steps after {settings['warmup']} warm-up, "
        "NumPy and PyTorch interleaved",
        f"machine: {machine['cpu']} ({machine['logical_cpus']} logical CPUs), "
        f"{machine['platform']}",
        f"versions: Python {machine['python']}, NumPy {machine['numpy']} ({machine['blas']})"
        + (f", PyTorch {machine['torch']}" if "torch" in machine else ", PyTorch not installed"),
    ]
    if machine.get("openblas_coretype"):
        out.append(f"environment: OPENBLAS_CORETYPE={machine['openblas_coretype']}")
    if machine.get("hint"):
        out.append(f"hint: {machine['hint']}")
    out.append("")
    header = ["network", "phase", "numpy ms", "torch ms", "numpy img/s", "torch img/s",
              "ratio", "target", "verdict"]
    rows = []
    for name, entry in results["networks"].items():
        rows += _timing_rows(name, entry, batch)
    out.append(_render(header, rows))
    out.append("")
    header = ["network", "fwd ms", "loss ms", "bwd ms", "spectral ms", "optim ms",
              "paired step ms", "spectral Δ ms", "spectral share", "95% interval",
              "torch share", "95% interval", "target", "verdict"]
    rows = []
    for name, entry in results["networks"].items():
        train = entry["train"]
        phases = train["numpy"]["phases_seconds"]
        row = [name] + [f"{phases[p] * 1e3:.2f}" for p in
                        ("forward", "loss", "backward", "regularizer", "optimizer")]
        if "regularizer_share" in train:
            ablation = train["regularizer_ablation"]
            ours = ablation["numpy"]
            row += [f"{ours['median_seconds_with'] * 1e3:.2f}",
                    f"{ours['median_difference_seconds'] * 1e3:.3f}",
                    f"{ours['share']:.2%}", _interval(ours)]
            if "torch" in ablation:
                row += [f"{ablation['torch']['share']:.2%}", _interval(ablation["torch"]),
                        "<= torch", _verdict(train.get("regularizer_met"))]
            else:
                row += ["-", "-", "<= torch", "(no torch)"]
        else:
            row += ["-"] * 7 + [""]
        rows.append(row)
    out.append("NumPy training step by phase (medians; 'spectral ms' is the time inside the "
               "regularizer's calls). The spectral share is measured by ablation, from "
               "back-to-back pairs of steps of one trainer with and without the regularizer "
               "(no PyTorch step in between): 'spectral Δ ms' (median difference) / 'paired "
               "step ms' (median step with it), with a distribution-free 95% interval of the "
               "median; 'torch share' is the same for PyTorch. Target: NumPy's share at most "
               "PyTorch's:")
    out.append(_render(header, rows))
    memory_rows = _memory_rows(results)
    if memory_rows:
        batches = settings["memory_batches"]
        header = ["network", "backend", "baseline MiB"] + [f"peak MiB @{b}" for b in batches]
        header += ["MiB / image", "target", "verdict"]
        out += ["", "Peak resident memory, one process per measurement (baseline = after imports):",
                _render(header, memory_rows)]
    return "\n".join(out)


def _memory_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, entry in results["networks"].items():
        report = entry.get("memory")
        if not report:
            continue
        for backend in ("numpy", "torch"):
            if backend not in report:
                continue
            points = report[backend]["points"]
            row = [name if backend == "numpy" else "", backend,
                   f"{points[0]['baseline_bytes'] / MIB:.0f}"]
            row += [f"{p['peak_bytes'] / MIB:.0f}" for p in points]
            per_image = report[backend].get("bytes_per_image")
            row.append("-" if per_image is None else f"{per_image / MIB:.2f}")
            if backend == "numpy" and "target_bytes" in report:
                row += [f"<= {report['target_bytes'] / MIB:.0f} @128", _verdict(report["met"])]
            else:
                row += ["", ""]
            rows.append(row)
    return rows


def _positive_ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m specnorm_np.bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m specnorm_np.bench",
        description="Time a float32 training step and an inference pass of three reference "
        "networks, against PyTorch CPU when it is installed, and measure peak memory.",
    )
    parser.add_argument("--batch", type=int, default=128, help="images per step (128)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for NumPy's BLAS and PyTorch (default: all usable CPUs)")
    parser.add_argument("--nets", default="mlp,cnn,cnn_bn",
                        help=f"comma-separated, among {','.join(NETWORKS)} (default: all)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per median (10)")
    parser.add_argument("--warmup", type=int, default=3, help="discarded warm-up steps (3)")
    parser.add_argument("--memory-batches", type=_positive_ints, default=None,
                        help="batch sizes for the memory probes (default: BATCH,2*BATCH)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--no-torch", action="store_true", help="time specnorm_np only")
    parser.add_argument("--no-regularizer", action="store_true",
                        help="leave the spectral regularizer out of the training step")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    if args.steps < 10:
        print(f"bench: note: medians of {args.steps} < 10 steps are noisy", file=sys.stderr)
    try:
        results = run(
            batch=args.batch, threads=args.threads, nets=nets, steps=args.steps,
            warmup=args.warmup, compare_torch=False if args.no_torch else None,
            memory_batches=() if args.no_memory else args.memory_batches,
            regularize=not args.no_regularizer, verbose=True,
        )
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0
