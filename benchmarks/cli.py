"""``aiscan-bench``: how fast is aiscan on this machine, stage by stage and end to end,
against the naive way, in one run."""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.util
import json
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aiscan.model.clip import cache_dir
from aiscan.model.console import Parser, error_line, show_defaults
from aiscan.scanner.core.dali import dali_available

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
Runner = Callable[[Sequence[Path]], None]
Plan = list[tuple[str, str, Callable[[], Runner]]]  # (stage, name, build)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="aiscan-bench", description=__doc__)
    p.add_argument(
        "folder",
        nargs="?",
        type=Path,
        help="benchmark on these images instead of generated corpora",
    )
    p.add_argument(
        "--model",
        default="default",
        help="aiscan ONNX model, or a shipped one by name: default, fast",
    )
    p.add_argument(
        "--models",
        default="",
        metavar="A.onnx,B.onnx",
        help="more models for the inference stage: paths (e.g. int8/fp16 variants) or "
        "shipped ones by name",
    )
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"))
    p.add_argument(
        "--decoder", default="cpu", choices=("cpu", "dali"), help="decoder of the end-to-end run"
    )
    p.add_argument(
        "--corpus",
        default="1024px,12mp",
        help="generated corpora: 1024px, 12mp, and -progressive, -mpo (multi-picture "
        "camera JPEG) or -png variants",
    )
    p.add_argument(
        "--images",
        default="",
        metavar="N[,N...]",
        help="images per corpus, one count for all or one per corpus "
        "(default: 256 at 1024px, 64 at 12 MP)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0, help="decode threads (default: cores)")
    p.add_argument(
        "--baselines",
        default="ort,torch,loader",
        help="naive runs: ort (PIL + ORT), torch (PIL + PyTorch eager), loader "
        "(PyTorch DataLoader, batched)",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="also time end to end over batch sizes and decode threads",
    )
    p.add_argument(
        "--memory",
        default="",
        metavar="N,N",
        help="instead: peak RSS of full scans of N small images, e.g. 2000,20000",
    )
    p.add_argument(
        "--nightly",
        type=int,
        default=0,
        metavar="N",
        help="instead: the nightly job on N small images: a first scan with --state, the "
        "second night on the unchanged tree, the state's size",
    )
    p.add_argument(
        "--ray",
        action="store_true",
        help="with --nightly: also the same tree with --engine ray against the local engine",
    )
    p.add_argument(
        "--report",
        type=int,
        default=0,
        metavar="N",
        help="instead: build time and size of `aiscan report` for an N-row verdict file",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke test)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=cache_dir() / "bench-data",
        help="where generated images are kept between runs (default: bench-data in aiscan's "
        "user cache, $AISCAN_CACHE or ~/.cache/aiscan)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="shared data with real photos for the mosaics (optional)",
    )
    p.add_argument("--results-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--tag", default="", help="appended to the results file name")
    return show_defaults(p)


def _corpora(args: argparse.Namespace, console: Console) -> list[tuple[str, list[Path], dict]]:
    from .corpus import make_corpus, photo_sources

    if args.folder:
        from aiscan.scanner.core.discovery import discover

        files = [Path(f.path) for f in discover([str(args.folder)]) if not f.error]
        limit = int(args.images) if args.images else None
        return [(str(args.folder), files[:limit], {"name": str(args.folder)})]
    sets = []
    names = args.corpus.split(",")
    counts = [int(n) for n in args.images.split(",")] if args.images else []
    if len(counts) not in (0, 1, len(names)):
        raise SystemExit(f"--images: give one count, or one per corpus ({len(names)})")
    for i, name in enumerate(names):
        size, _, variant = name.partition("-")
        progressive, mpo, png = variant == "progressive", variant == "mpo", variant == "png"
        if size not in ("1024px", "12mp") or variant not in ("", "progressive", "mpo", "png"):
            raise SystemExit(
                f"--corpus {name}: use 1024px or 12mp, optionally -progressive/-mpo/-png"
            )
        default = {"1024px": 256, "12mp": 64}[size]
        count = counts[min(i, len(counts) - 1)] if counts else default
        c = make_corpus(
            args.cache_dir,
            size,
            count,
            data_dir=args.data_dir,
            progressive=progressive,
            mpo=mpo,
            png=png,
        )
        kind = "PNGs" if png else "JPEGs"
        console.print(
            f"corpus {name}: {count} {kind}, {c.width}x{c.height}, mean {c.mean_bytes / 1e6:.2f} MB"
        )
        content = "photo mosaics" if photo_sources(args.data_dir) else "procedural texture"
        sets.append(
            (
                name,
                c.files,
                {
                    "name": name,
                    "images": count,
                    "width": c.width,
                    "height": c.height,
                    "mean_bytes": c.mean_bytes,
                    "progressive": progressive,
                    "mpo": mpo,
                    "png": png,
                    "content": content,
                },
            )
        )
    return sets


def _plan(args: argparse.Namespace, model: Path, files: list[Path], workers: int) -> Plan:
    """Every runner of a throughput run, in order: baselines, the stages alone, the
    end-to-end scan (with and without evidence), and the sweep."""
    from aiscan.model.meta import read_info

    info = read_info(model)
    spec, batch, folder = info.preprocessing, args.batch_size, files[0].parent.parent
    return [
        *_baselines(args, model, info, workers),
        *_stages(args, model, spec, folder, workers),
        *_end_to_end(args, model, batch, workers),
    ]


def _baselines(args: argparse.Namespace, model: Path, info: Any, workers: int) -> Plan:
    """The naive ways to do the same work: what aiscan is compared with."""
    from aiscan.benchmarks import runners

    spec, batch = info.preprocessing, args.batch_size
    have_torch = all(importlib.util.find_spec(m) for m in ("torch", "timm"))
    wanted = args.baselines.split(",")
    plan: Plan = []
    if "ort" in wanted:
        plan.append(
            ("baseline", "naive PIL + ORT (1 by 1)", lambda: runners.naive_ort(model, spec))
        )
    if "torch" in wanted and have_torch:
        plan.append(
            ("baseline", "naive PIL + torch (1 by 1)", lambda: runners.naive_torch(info.arch, spec))
        )
    if "loader" in wanted and have_torch:
        name = f"torch DataLoader (w{workers}, b{batch})"
        plan.append(
            ("baseline", name, lambda: runners.torch_loader(info.arch, spec, batch, workers))
        )
    return plan


def _stages(args: argparse.Namespace, model: Path, spec: Any, folder: Path, workers: int) -> Plan:
    """Each stage alone: discovery, decode (aiscan's, the reference, DALI), evidence,
    inference of each model, writing."""
    from aiscan.benchmarks import runners
    from aiscan.model.meta import read_info
    from aiscan.scanner.core.infer import cuda_device_count

    batch = args.batch_size
    plan: Plan = [
        ("discovery", "discovery", lambda: runners.discovery(folder)),
        ("decode", "decode aiscan CPU", lambda: runners.decode_only(spec, workers)),
        (
            "decode",
            "decode PIL full (reference)",
            lambda: runners.decode_only(spec, workers, decode="full"),
        ),
        ("evidence", "evidence metadata (1 thread)", runners.evidence_only),
    ]
    if dali_available():
        gpu = 0 if cuda_device_count() > 0 else None
        name = f"decode DALI {'GPU' if gpu is not None else 'CPU'}"
        plan.append(
            ("decode", name, lambda: runners.decode_dali(spec, workers, max(batch, 16), gpu))
        )
    for m in [model, *getattr(args, "model_files", [])]:
        precision = read_info(m).extra.get("precision", "fp32")
        run = partial(runners.inference_only, m, spec, batch, args.device)
        plan.append(("inference", f"infer {precision} {args.device} {m.stem}", run))
    plan.append(("write", "write CSV", lambda: runners.write_only()))
    return plan


def _end_to_end(args: argparse.Namespace, model: Path, batch: int, workers: int) -> Plan:
    """The scan a user runs, without the evidence columns (what reading them costs), and
    the sweep of batch size, decode workers and inference threads."""
    from aiscan.benchmarks import runners

    scan = partial(runners.aiscan_scan, model, device=args.device, decoder=args.decoder)
    plan: Plan = [
        (
            "end to end",
            f"aiscan e2e ({args.decoder}, b{batch})",
            partial(scan, batch_size=batch, workers=workers),
        ),
        (
            "evidence off",
            f"aiscan e2e --no-evidence ({args.decoder}, b{batch})",
            partial(scan, batch_size=batch, workers=workers, evidence=False),
        ),
    ]
    if args.sweep:
        for b in (8, 16, 32):
            for w in sorted({1, workers}):
                for t in sorted({1, workers}):
                    run = partial(scan, batch_size=b, workers=w, threads=t)
                    plan.append(("sweep", f"aiscan e2e (b{b}, w{w}, t{t})", run))
    return plan


def _throughput(args: argparse.Namespace, model: Path, console: Console) -> dict[str, Any]:
    from aiscan.benchmarks import runners
    from aiscan.scanner.core.infer import default_threads

    workers = args.workers or default_threads()
    timings, corpora = [], []
    for name, files, meta in _corpora(args, console):
        corpora.append(meta)
        # Runners are built just before they are timed and dropped after: an idle second
        # ONNX Runtime session in the process measurably slows the one being timed.
        for stage, runner, build in _plan(args, model, files, workers):
            console.print(f"  {name}: {runner} ...")
            run = build()
            timings.append(
                runners.timed(runner, name, run, files, repeats=args.repeats, stage=stage)
            )
            del run
            gc.collect()
    results = [t.as_dict() for t in timings]
    return {
        "corpora": corpora,
        "timings": results,
        "ratios": ratios(results),
        "settings": {
            "batch_size": args.batch_size,
            "workers": workers,
            "repeats": args.repeats,
            "model": str(model),
            "device": args.device,
            "decoder": args.decoder,
        },
    }


def ratios(timings: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per corpus: end to end over each baseline, and the slowest stage over end to end."""
    out: dict[str, dict[str, float]] = {}
    for corpus in dict.fromkeys(t["corpus"] for t in timings):
        rows = [t for t in timings if t["corpus"] == corpus]
        e2e = next((t["images_per_s"] for t in rows if t["stage"] == "end to end"), None)
        if not e2e:
            continue
        entry = {}
        for t in rows:
            if t["stage"] == "baseline":
                key = "vs " + t["runner"].split("(")[0].strip()
                entry[key] = round(e2e / t["images_per_s"], 2)
        decode = next((t["images_per_s"] for t in rows if t["stage"] == "decode"), None)
        infer = next((t["images_per_s"] for t in rows if t["stage"] == "inference"), None)
        if decode and infer:
            entry["slowest stage / end to end"] = round(min(decode, infer) / e2e, 2)
        bare = next((t["images_per_s"] for t in rows if t["stage"] == "evidence off"), None)
        if bare:  # > 1: the scan with the evidence columns takes that much longer
            entry["end to end: with evidence / without (time)"] = round(bare / e2e, 3)
        out[corpus] = entry
    return out


def _nightly(args: argparse.Namespace, model: Path, console: Console) -> dict[str, Any]:
    from .memory import small_tree
    from .nightly import nightly

    tree = small_tree(args.cache_dir, args.nightly)
    console.print(f"  nightly job on {args.nightly} files ...")
    return {"nightly": nightly(tree, args.nightly, model, args.cache_dir / "nightly", args.ray)}


def _report(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from .report_bench import report_bench

    console.print(f"  report of {args.report} rows ...")
    return {"report": report_bench(args.cache_dir, args.report, args.data_dir)}


def _memory(args: argparse.Namespace, model: Path, console: Console) -> dict[str, Any]:
    from .memory import peak_rss, small_tree

    runs = []
    out_dir = Path(tempfile.mkdtemp(prefix="aiscan-mem-"))
    for n in (int(x) for x in args.memory.split(",")):
        tree = small_tree(args.cache_dir, n)
        console.print(f"  scanning {n} files ...")
        runs.append(peak_rss(tree, model, out_dir / f"v{n}.csv", n).as_dict())
    return {"memory": runs}


def render(console: Console, results: dict[str, Any]) -> None:
    if "report" in results:
        r = results["report"]
        console.print(
            f"aiscan report: {r['rows']} rows in {r['seconds']:.1f} s ({r['rows_per_s']} rows/s), "
            f"page {r['bytes'] / 2**20:.2f} MiB ({r['gallery']} thumbnails, "
            f"{r['disagreements']} disagreements)",
            highlight=False,
        )
        return
    if "nightly" in results:
        n = results["nightly"]
        table = Table("run", "seconds", "files scanned", "peak RSS (MiB)", title="nightly job")
        runs = [("first night", n["first_night"]), ("second night", n["second_night"])]
        runs += [(f"engine {k}", n["engines"][k]) for k in ("local", "ray") if "engines" in n]
        for name, r in runs:
            table.add_row(
                name, f"{r['seconds']:.1f}", str(r["files_scanned"]), f"{r['peak_rss_mib']:.0f}"
            )
        console.print(table)
        console.print(
            f"second night {n['second_night_speedup']}x faster; state "
            f"{n['state_bytes'] / 2**20:.1f} MiB for {n['files']} files "
            f"({n['state_bytes_per_million_files'] / 2**20:.0f} MiB per million)",
            highlight=False,
        )
        return
    if "memory" in results:
        table = Table("files", "peak RSS (MiB)", "seconds", "exit", title="aiscan peak memory")
        for r in results["memory"]:
            table.add_row(
                str(r["files"]),
                f"{r['peak_rss_mib']:.0f}",
                f"{r['seconds']:.1f}",
                str(r["exit_code"]),
            )
        console.print(table)
        return
    table = Table(
        "corpus",
        "runner",
        "img/s",
        "vs naive",
        "spread",
        "CPU busy",
        "GPU %",
        title="aiscan throughput (vs naive: the first baseline)",
    )
    base: dict[str, float] = {}
    for t in results["timings"]:
        if t["stage"] == "baseline":
            base.setdefault(t["corpus"], t["images_per_s"])
        ref = base.get(t["corpus"])
        table.add_row(
            t["corpus"],
            t["runner"],
            f"{t['images_per_s']:.1f}",
            f"{t['images_per_s'] / ref:.2f}x" if ref else "-",
            f"{t['spread']:.0%}",
            f"{t['cpu_busy']:.2f}",
            "-" if t["gpu_util"] is None else str(t["gpu_util"]),
        )
    console.print(table)
    for corpus, entry in results.get("ratios", {}).items():
        console.print(f"{corpus}: " + ", ".join(f"{k} {v}x" for k, v in entry.items()))


def results_name(results: dict[str, Any], kind: str, quick: bool) -> str:
    """File stem that says backend, precision and device, e.g.
    ``throughput_cpu-decode_onnxruntime-cpu_fp32_cpu2core``."""
    settings = results.get("settings", {})
    device = settings.get("device", "cpu")
    gpu = results["machine"].get("gpu")
    where = (
        re.sub(r"[^a-z0-9]+", "-", str(gpu).lower()).strip("-")
        if gpu and device != "cpu"
        else f"cpu{results['machine']['cores']}core"
    )
    backend = f"{settings.get('decoder', 'cpu')}-decode_onnxruntime-{device}"
    return f"{kind}_{backend}_{results['precision']}_{where}{'_quick' if quick else ''}"


def _write(results: dict[str, Any], directory: Path, stem: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = results.get("timings") or results.get("memory") or []
    if rows:
        with (directory / f"{stem}.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows
            )
    return directory / f"{stem}.json"


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    from aiscan.model.meta import read_info
    from aiscan.scanner.core.errors import ConfigError
    from aiscan.scanner.core.models import resolve_model

    from .runners import machine

    if args.quick:
        args.images, args.repeats = args.images or "8", 1
        args.memory = args.memory and "200,400"
    try:
        model = resolve_model(args.model)
        # --models: paths, or shipped models by name as --model takes them
        args.model_files = [resolve_model(x) for x in filter(None, args.models.split(","))]
    except ConfigError as exc:
        return error_line(
            "aiscan-bench",
            f"{exc} (any aiscan model will do for speed: aiscan-export --random-init "
            "--out bench.onnx)",
        )
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "precision": read_info(model).extra.get("precision", "fp32"),
    }
    results.update(
        _report(args, console)
        if args.report
        else _nightly(args, model, console)
        if args.nightly
        else _memory(args, model, console)
        if args.memory
        else _throughput(args, model, console)
    )
    render(console, results)
    kind = (
        "report"
        if args.report
        else "nightly"
        if args.nightly
        else "memory"
        if args.memory
        else "throughput"
    )
    stem = results_name(results, kind, args.quick)
    stem += f"_{args.tag}" if args.tag else ""
    console.print(f"results: {_write(results, args.results_dir, stem)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``aiscan-bench``: a missing optional dependency is one line and exit 2."""
    from aiscan.model.console import run_cli

    return run_cli("aiscan-bench", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
