"""``aiscan-eval RUN_DIR|MODEL [DATA_DIR]``: the report's metrics and plots for a model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from aiscan.model.console import Parser, error_line, show_defaults


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="aiscan-eval", description=__doc__)
    p.add_argument(
        "target",
        help="a run folder (its model.onnx and split), a .onnx model, or a shipped model "
        "by name ('default', 'fast')",
    )
    p.add_argument("data_dir", nargs="?", help="with a model file: folder with ai/ and real/")
    p.add_argument("--split", default="test", help="which split of a run (default: test)")
    p.add_argument(
        "--out",
        help="where the JSON report and plots go (default: a run's own folder; with a model "
        "file or name, nothing is written: the table only)",
    )
    p.add_argument("--threshold", type=float, help="default: the model's own")
    p.add_argument("--model", help="with a run: evaluate this model file on the run's split")
    p.add_argument(
        "--embed",
        action="store_true",
        help="write the metrics into the model's metadata (changes its sha256)",
    )
    p.add_argument(
        "--reencode",
        action="store_true",
        help="also re-save every image as JPEG q90 and report the change",
    )
    return show_defaults(p)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    from .evaluate import evaluate
    from .metrics import REPORTED

    try:
        report = evaluate(
            args.target,
            args.data_dir,
            split=args.split,
            out_dir=args.out,
            reencode=args.reencode,
            threshold=args.threshold,
            model=args.model,
        )
    except ValueError as exc:
        return error_line("aiscan-eval", exc)
    if args.embed:
        from .evaluate import embed

        embed(report["model"], report)
    m = report["metrics"]
    table = Table(
        "metric",
        "value",
        title=f"{report['model_id']} on {report['split']} ({report['images']} images, AI positive)",
    )
    for key in (
        *REPORTED,
        "tp",
        "fp",
        "tn",
        "fn",
        "threshold",
    ):
        table.add_row(key, _fmt(m[key]))
    if "reencode_jpeg_q90" in report:
        for key, delta in report["reencode_jpeg_q90"]["delta"].items():
            table.add_row(f"re-encoded q90: delta {key}", f"{delta:+.4f}")
    console.print(table)
    at = report["at_threshold"]
    promise = f", promised {at['promise']:.1%}" if at.get("promise") is not None else ""
    kinds = Table(
        "kind",
        "n",
        "share",
        title=f"at the ai edge ({at['threshold']:.4f}): real flagged {at['fpr']:.1%}{promise}, "
        f"AI caught {at['tpr']:.1%}",
    )
    for name, row in at["by_category"].items():
        share = row.get("flagged", row.get("caught", 0.0))
        kinds.add_row(name, str(row["n"]), f"{share:.1%}")
    console.print(kinds)
    src = Table("source", "n", "accuracy", "mean p_ai", title="per source")
    for name, row in report["per_source"].items():
        src.add_row(name, str(row["n"]), _fmt(row["accuracy"]), _fmt(row["mean_p_ai"]))
    console.print(src)
    if report["unreadable"]:
        console.print(f"[yellow]{len(report['unreadable'])} images could not be read[/]")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``aiscan-eval``: a missing optional dependency is one line and exit 2."""
    from aiscan.model.console import run_cli

    return run_cli("aiscan-eval", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
