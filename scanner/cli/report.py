"""``aiscan report VERDICTS --out report.html``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from aiscan.model.console import Parser, error_line, printable, show_defaults

from .common import EXIT_ENVIRONMENT, EXIT_OK


def report_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="aiscan report",
        description="One self-contained HTML page from a verdict file (CSV, JSONL or Parquet): "
        "counts, the p_ai histogram, folders with most flagged images, and a gallery of "
        "the flagged images with embedded thumbnails. Opens offline.",
    )
    p.add_argument("verdicts", type=Path, help="a verdict file written by aiscan")
    p.add_argument("--out", "-o", required=True, type=Path, help="the HTML file to write")
    p.add_argument(
        "--gallery", type=int, default=200, help="flagged images shown (default %(default)s)"
    )
    p.add_argument(
        "--thumb-size", type=int, default=160, help="thumbnail side, pixels (default %(default)s)"
    )
    return show_defaults(p)


def report_main(argv: Sequence[str]) -> int:
    """``aiscan report VERDICTS --out report.html``."""
    args = report_parser().parse_args(argv)
    err = Console(stderr=True)
    if not args.verdicts.is_file():
        return error_line("aiscan", f"no such verdict file: {args.verdicts}")
    if not (0 <= args.gallery <= 100_000 and 16 <= args.thumb_size <= 1024):
        return error_line(
            "aiscan", "--gallery must be within 0..100000 and --thumb-size within 16..1024"
        )
    from ..report import write_report

    try:
        made = write_report(args.verdicts, args.out, gallery=args.gallery, thumb_px=args.thumb_size)
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        return error_line(
            "aiscan", f"{args.verdicts} is not a readable aiscan verdict file ({exc})"
        )
    except OSError as exc:
        return error_line("aiscan", f"cannot write {args.out}: {exc}", EXIT_ENVIRONMENT)
    err.print(
        escape(
            printable(
                f"aiscan report: {args.out} ({made['bytes'] / 1e6:.1f} MB): {made['rows']} "
                f"files, {made['flagged']} flagged, {made['gallery']} in the gallery"
            )
        ),
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_OK
