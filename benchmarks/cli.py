"""``aiscan-bench``: how fast is aiscan on this machine, against the naive way, in one run."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aiscan-bench", description=__doc__)
    p.add_argument(
        "folder",
        nargs="?",
        type=Path,
        help="benchmark on these images instead of generated corpora",
    )
    p.add_argument("--model", type=Path, help="aiscan ONNX model (default: the shipped one)")
    p.add_argument("--corpus", default="1024px,12mp", help="generated corpora: 1024px,12mp")
    p.add_argument(
        "--images",
        type=int,
        default=0,
        help="images per corpus (default: 256 at 1024px, 64 at 12 MP)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="decode threads (default: cores)")
    p.add_argument(
        "--memory",
        default="",
        metavar="N,N",
        help="instead: peak RSS of full scans of N small images, e.g. 2000,20000",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke test)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("bench-data"),
        help="where generated images are kept between runs",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="shared data with real photos for the mosaics (optional)",
    )
    p.add_argument("--results-dir", type=Path, default=Path("benchmarks/results"))
    return p


def _throughput(args: argparse.Namespace, model: Path, console: Console) -> dict[str, object]:
    from aiscan.benchmarks import runners
    from aiscan.benchmarks.corpus import make_corpus, photo_sources
    from aiscan.scanner.infer import Classifier, default_threads

    spec = Classifier(model, "cpu").info.preprocessing
    workers = args.workers or default_threads()
    batch = args.batch_size
    sets: list[tuple[str, list[Path]]] = []
    corpora: list[dict[str, object]] = []
    if args.folder:
        from aiscan.scanner.discover import discover

        files = [Path(f.path) for f in discover([str(args.folder)]) if not f.error]
        sets.append((str(args.folder), files[: args.images or None]))
    else:
        for name in args.corpus.split(","):
            count = args.images or {"1024px": 256, "12mp": 64}[name]
            corpus = make_corpus(args.cache_dir, name, count, data_dir=args.data_dir)
            console.print(
                f"corpus {name}: {count} JPEGs, {corpus.width}x{corpus.height}, "
                f"mean {corpus.mean_bytes / 1e6:.2f} MB"
            )
            sets.append((name, corpus.files))
            corpora.append(
                {
                    "name": name,
                    "images": count,
                    "width": corpus.width,
                    "height": corpus.height,
                    "mean_bytes": corpus.mean_bytes,
                    "progressive": corpus.progressive,
                    "content": "photo mosaics"
                    if photo_sources(args.data_dir)
                    else "procedural texture",
                }
            )
    timings = []
    for name, files in sets:
        # Runners are built just before they are timed and dropped after: an idle second
        # ONNX Runtime session in the process measurably slows the one being timed.
        plan: dict[str, Callable[[], Callable[[Sequence[Path]], None]]] = {
            "naive (PIL + ORT, 1 image at a time)": lambda: runners.naive_ort(model, spec),
            "aiscan decode only": lambda: runners.decode_only(spec, workers),
            "decode only, full-size reference decode": lambda: runners.decode_only(
                spec, workers, fast=False
            ),
            "aiscan inference only": lambda: runners.inference_only(model, spec, batch),
            "aiscan end to end": lambda: runners.aiscan_scan(
                model, batch_size=batch, workers=workers
            ),
        }
        for runner, build in plan.items():
            console.print(f"  timing {runner} on {name} ...")
            run = build()
            timings.append(runners.timed(runner, name, run, files, repeats=args.repeats))
            del run
            gc.collect()
    return {
        "corpora": corpora,
        "settings": {
            "batch_size": batch,
            "workers": workers,
            "repeats": args.repeats,
            "model": str(model),
        },
        "timings": [t.as_dict() for t in timings],
    }


def _memory(args: argparse.Namespace, model: Path, console: Console) -> dict[str, object]:
    from aiscan.benchmarks.memory import peak_rss, small_tree

    runs = []
    out_dir = Path(tempfile.mkdtemp(prefix="aiscan-mem-"))
    for n in (int(x) for x in args.memory.split(",")):
        tree = small_tree(args.cache_dir, n)
        console.print(f"  scanning {n} files ...")
        runs.append(peak_rss(tree, model, out_dir / f"v{n}.csv", n).as_dict())
    return {"memory": runs}


def render(console: Console, results: dict[str, object]) -> None:
    if "memory" in results:
        table = Table("files", "peak RSS (MiB)", "seconds", "exit", title="aiscan peak memory")
        for r in results["memory"]:  # type: ignore[attr-defined]
            table.add_row(
                str(r["files"]),
                f"{r['peak_rss_mib']:.0f}",
                f"{r['seconds']:.1f}",
                str(r["exit_code"]),
            )
        console.print(table)
        return
    table = Table("corpus", "runner", "images/s", "vs naive", "spread", title="aiscan throughput")
    naive: dict[str, float] = {}
    for t in results["timings"]:  # type: ignore[attr-defined]
        if t["runner"].startswith("naive"):
            naive[t["corpus"]] = t["images_per_s"]
        base = naive.get(t["corpus"])
        ratio = f"{t['images_per_s'] / base:.2f}x" if base else "-"
        table.add_row(
            t["corpus"], t["runner"], f"{t['images_per_s']:.1f}", ratio, f"{t['spread']:.0%}"
        )
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    from aiscan.benchmarks.runners import machine
    from aiscan.scanner.config import ConfigError, resolve_model

    if args.quick:
        args.images, args.repeats = args.images or 8, 1
        args.memory = args.memory and "200,400"
    try:
        model = resolve_model(args.model)
    except ConfigError as exc:
        console.print(
            f"[red]aiscan-bench: error:[/] {exc} (any aiscan model will do for speed: "
            "aiscan-export --random-init --out bench.onnx)",
            highlight=False,
        )
        return 2
    results: dict[str, object] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "device": "cpu",
        "backend": "onnxruntime-cpu-ep",
        "precision": "fp32",
        "quick": args.quick,
    }
    results.update(
        _memory(args, model, console) if args.memory else _throughput(args, model, console)
    )
    render(console, results)
    kind = "memory" if args.memory else "throughput"
    cores = results["machine"]["cores"]  # type: ignore[index]
    name = f"{kind}_onnxruntime-cpu_fp32_cpu{cores}core{'_quick' if args.quick else ''}.json"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / name).write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"results: {args.results_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
