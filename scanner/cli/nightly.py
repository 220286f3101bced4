"""``aiscan merge`` (shard outputs into one file) and ``aiscan export-state`` (a state
database's current verdicts as a verdict file)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from aiscan.model.console import Parser, error_line, printable
from aiscan.model.errors import AiscanError

from ..output.formats import FORMATS, resolve_format
from .common import EXIT_ENVIRONMENT, EXIT_FILE_ERRORS, EXIT_OK


def _output_options(p: argparse.ArgumentParser) -> None:
    """``--out`` and ``--format``, as the scan takes them (the suffix decides the format)."""
    p.add_argument("--out", "-o", required=True, type=Path)
    p.add_argument(
        "--format",
        dest="fmt",
        choices=FORMATS,
        help="the output's format (default: the one the --out suffix names)",
    )


def export_state_main(argv: Sequence[str]) -> int:
    """``aiscan export-state scans.db --out all.parquet``: the current verdict table."""
    p = Parser(
        prog="aiscan export-state",
        description="Every file's latest verdict in a --state database (deleted files left "
        "out), in the verdict file schema.",
    )
    p.add_argument("state", type=Path, help="the state database")
    _output_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args(argv)
    err = Console(stderr=True)
    from ..nightly.state import current_rows
    from ..output.formats import chunked
    from ..output.writer import VerdictWriter

    try:
        fmt = resolve_format(args.out, args.fmt)
        writer = VerdictWriter(args.out, fmt, overwrite=args.overwrite)
        try:
            n = 0
            for chunk in chunked(current_rows(args.state)):
                writer.write(chunk)
                n += len(chunk)
            writer.finish()
        finally:
            writer.close()
    except AiscanError as exc:
        return error_line("aiscan", exc, exc.exit_status)
    except OSError as exc:
        return error_line("aiscan", f"cannot write {args.out}: {exc}", EXIT_ENVIRONMENT)
    err.print(escape(printable(f"aiscan export-state: {n} files to {args.out}")), highlight=False)
    return EXIT_OK


def merge_main(argv: Sequence[str]) -> int:
    """``aiscan merge PART... --out all.csv [--tree STORE]``."""
    p = Parser(
        prog="aiscan merge",
        description="Join the outputs of --shard I/N runs into one verdict file and check "
        "that they add up: shards 0..N-1 each once, no file twice, and (with --tree) every "
        "file of the tree once. Exit 0 when complete, 1 when something is missing or "
        "doubled (the merged file is written either way), 2 on bad input.",
    )
    p.add_argument("parts", nargs="+", type=Path, help="the shard runs' outputs")
    _output_options(p)
    p.add_argument("--tree", nargs="+", metavar="PATH", help="the paths the shards scanned")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--mix-models",
        action="store_true",
        help="merge parts whose rows were judged by different models, edges or evidence "
        "policies (refused without it)",
    )
    args = p.parse_args(argv)
    err = Console(stderr=True)
    from ..nightly.shards import merge

    try:
        fmt = resolve_format(args.out, args.fmt)
        report = merge(
            args.parts,
            args.out,
            fmt=fmt,
            tree=args.tree or (),
            overwrite=args.overwrite,
            mix_models=args.mix_models,
        )
    except AiscanError as exc:
        return error_line("aiscan", exc, exc.exit_status)
    except OSError as exc:
        return error_line("aiscan", f"cannot merge: {exc}", EXIT_ENVIRONMENT)
    lines = [f"aiscan merge: {report.rows} rows from {report.parts} parts (shards {report.shards})"]
    if report.missing_shards:
        shards = ", ".join(map(str, report.missing_shards))
        lines.append(f"missing shards: {len(report.missing_shards)}: {shards}")
    for label, items in (
        ("files with rows in two parts", report.doubled),
        ("files of the tree without a row", report.missing),
        ("rows for files not in the tree", report.unexpected),
    ):
        if items:
            more = f" (+{len(items) - 20} more)" if len(items) > 20 else ""
            lines.append(f"{label}: {len(items)}{more}:")
            lines += [f"  {item}" for item in items[:20]]  # one file a line
    for line in lines:
        err.print(escape(printable(line)), highlight=False, soft_wrap=True)
    return EXIT_OK if report.complete else EXIT_FILE_ERRORS
