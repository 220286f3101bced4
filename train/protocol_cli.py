"""``aiscan-protocol``: how a recipe or a backbone does on sources it never saw.

aiscan-protocol folds RUN_fold1 ... RUN_foldK [--out protocol.json]
aiscan-protocol ensemble RECIPE_DIR:EPOCH RECIPE_DIR:EPOCH ... [--out protocol.json]
aiscan-protocol probe DATA_DIR... --arch A [--init W] [--resize crop] --out DIR
aiscan-protocol features DATA_DIR... --out CACHE [--views base,flip] [--precision int8]
aiscan-protocol heads DATA_DIR... --features CACHE [--head linear] [--on cls:11] --out JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aiscan.model.clip_graph import PRECISIONS
from aiscan.model.console import Parser, error_line, show_defaults
from aiscan.model.errors import UsageError
from aiscan.model.preprocessing import RESIZE_POLICIES

from .features import VIEWS, parse_views
from .heads import BALANCES, HEAD_KINDS

#: Summary figures shown in tables, in order.
SHOWN = (
    "pooled_auc",
    "mean_source_auc",
    "worst_source_auc",
    "pooled_balanced_accuracy",
    "best_balanced_accuracy",
    "best_balanced_threshold",
    "square_auc",
    "mean_fold_auc",
    "tpr_at_fpr_1pct",
    "tpr_at_fpr_5pct",
)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="aiscan-protocol",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the usage lines as written
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("folds", help="pool the held-out scores of aiscan-train --fold runs")
    f.add_argument("runs", nargs="+", help="the K run folders of one recipe")
    f.add_argument("--column", default="p_ai", help="p_ai, or p_ai_3crop (test-time 3 crops)")
    f.add_argument("--out", help="JSON report (default: print only)")
    f.add_argument("--threshold", type=float, default=0.5)
    e = sub.add_parser(
        "ensemble", help="the mean of several recipes' held-out scores, each at one epoch"
    )
    e.add_argument(
        "recipes",
        nargs="+",
        metavar="RECIPE_DIR:EPOCH",
        help="a folder of fold runs (RECIPE_DIR/fold*, same folds for every recipe) and the "
        "epoch to take from it",
    )
    e.add_argument("--out", help="JSON report (default: print only)")
    e.add_argument("--threshold", type=float, default=0.5)
    q = sub.add_parser("probe", help="frozen features + logistic regression, out of source")
    q.add_argument("data_dirs", nargs="+", metavar="DATA_DIR")
    q.add_argument("--arch", required=True, help="timm architecture")
    q.add_argument("--init", help="local pretrained weights (see aiscan-train --init)")
    q.add_argument("--resize", default="squash", choices=RESIZE_POLICIES)
    q.add_argument("--norm", default="half", choices=("half", "imagenet"))
    q.add_argument("--input-size", type=int, default=224)
    q.add_argument("--groups", default="source", help="'source' (leave one out) or K folds")
    q.add_argument("--c", type=float, default=0.1, help="inverse L2 strength")
    q.add_argument("--out", required=True, help="folder: feature cache and JSON report")
    x = sub.add_parser(
        "features",
        help="frozen CLIP features of every image, per view, cached (resumable)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    x.add_argument("data_dirs", nargs="+", metavar="DATA_DIR")
    x.add_argument("--out", required=True, help="cache folder (one subfolder per view)")
    x.add_argument("--views", default="base", help="comma-separated, from " + ",".join(VIEWS))
    x.add_argument("--precision", default="int8rr", choices=PRECISIONS, help="encoder graph")
    x.add_argument(
        "--pixels",
        default="canonical",
        choices=("canonical", "native"),
        help="pixel regime: 'canonical' puts every image through the 256 px JPEG q85 copy "
        "first (the default model's), 'native' resizes the file as it is",
    )
    x.add_argument("--batch-size", type=int, default=32)
    x.add_argument("--threads", type=int, default=None, help="inference threads (all cores)")
    h = sub.add_parser(
        "heads",
        help="a head on cached features, scored out of source (leave one source out)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    h.add_argument("data_dirs", nargs="+", metavar="DATA_DIR")
    h.add_argument("--features", required=True, help="the cache of aiscan-protocol features")
    h.add_argument("--head", default="linear", choices=HEAD_KINDS)
    h.add_argument("--on", default="cls:11", help="embeds, cls:N[,M...] or cls:all")
    h.add_argument("--c", type=float, default=0.001, help="linear: inverse L2 strength")
    h.add_argument("--hidden", type=int, default=256, help="mlp: hidden units")
    h.add_argument("--epochs", type=int, default=20, help="mlp: epochs")
    h.add_argument("--weight-decay", type=float, default=0.05, help="mlp: AdamW decay")
    h.add_argument("--balance", default="source", choices=BALANCES)
    h.add_argument("--views", default="base", help="training views, comma-separated")
    h.add_argument(
        "--also-features",
        action="append",
        default=[],
        metavar="CACHE",
        help="another features cache of the same images (another pixel regime) whose base "
        "view adds training rows, never scores (repeatable)",
    )
    h.add_argument(
        "--promise",
        type=float,
        default=0.05,
        help="the ai band's false-alarm promise: the edge is set on the held-out scores so "
        "that the pooled FPR is at most this and no real kind's above twice it",
    )
    h.add_argument("--groups", default="source", help="'source' (leave one out) or K folds")
    h.add_argument(
        "--score-only",
        action="append",
        default=[],
        metavar="DATA_DIR",
        help="a data folder whose images are scored but never trained on (repeatable)",
    )
    h.add_argument(
        "--score-only-source",
        action="append",
        default=[],
        metavar="[LABEL/]SOURCE",
        help="a source (e.g. pacs, or real/pacs for one class of it) scored but never "
        "trained on (repeatable)",
    )
    h.add_argument("--out", required=True, help="JSON report; scores go beside it as CSV")
    return show_defaults(p)


def _table(console: Console, title: str, rows: dict[str, dict[str, Any]]) -> None:
    table = Table(title=title)
    table.add_column("")
    for key in SHOWN:
        table.add_column(key.replace("_", " "), justify="right")
    for name, s in rows.items():
        table.add_row(name, *(f"{s[k]:.4f}" if k in s else "-" for k in SHOWN))
    console.print(table)


def _folds(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from .protocol import aspect_is_square, load_folds, summarize

    pooled = load_folds(args.runs, args.column)
    square = aspect_is_square(next(iter(pooled.values())).samples)
    report = {
        "runs": [str(r) for r in args.runs],
        "column": args.column,
        "epochs": {
            str(e): summarize(scored, args.threshold, square) for e, scored in pooled.items()
        },
    }
    _table(
        console,
        f"held-out sources, {args.column}",
        {f"epoch {e}": s for e, s in report["epochs"].items()},
    )
    return report


def _ensemble(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from .protocol import aspect_is_square, load_folds, mean_of, summarize

    if len(args.recipes) < 2:
        raise UsageError("an ensemble needs two or more recipes")
    members, scored = [], []
    for spec in args.recipes:
        folder, sep, epoch = spec.rpartition(":")
        if not sep or not epoch.isdigit():
            raise UsageError(f"{spec!r}: expected RECIPE_DIR:EPOCH, e.g. runs/ft-b0-robust:1")
        runs = sorted(str(p) for p in Path(folder).glob("fold*") if p.is_dir())
        if not runs:
            raise UsageError(f"{folder} has no fold* run folders")
        pooled = load_folds(runs)
        if int(epoch) not in pooled:
            raise UsageError(f"{folder} has no epoch {epoch} finished by every fold")
        scored.append(pooled[int(epoch)])
        members.append({"recipe": folder, "epoch": int(epoch), "runs": runs})
    ensemble = mean_of(scored)
    square = aspect_is_square(ensemble.samples)
    for member, one in zip(members, scored, strict=True):
        member["summary"] = summarize(one, args.threshold, square)
    report = {
        "members": members,
        "combine": "mean p_ai",
        "summary": summarize(ensemble, args.threshold, square),
    }
    rows = {f"{Path(m['recipe']).name} @{m['epoch']}": m["summary"] for m in members}
    rows["ensemble (mean p_ai)"] = report["summary"]
    _table(console, "held-out sources, ensemble", rows)
    return report


def _probe(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    import numpy as np

    from aiscan.model.preprocessing import Preprocessing

    from .data import find_samples
    from .loop import NORMS
    from .protocol import aspect_is_square, extract_features, probe, summarize

    mean, std = NORMS[args.norm]
    spec = Preprocessing((args.input_size, args.input_size), mean, std, resize=args.resize)
    samples = find_samples(args.data_dirs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / f"features_{args.arch}_{args.resize}_{args.input_size}.npz"
    paths = [s.path for s in samples]
    if cache.exists() and list(np.load(cache)["paths"]) == paths:
        feats = np.load(cache)["features"]
    else:
        feats = extract_features(samples, args.arch, args.init, spec)
        np.savez(cache, features=feats, paths=np.array(paths))
    square = aspect_is_square(samples)
    scored = probe(samples, feats, args.groups, args.c)
    report = {
        "arch": args.arch,
        "init": args.init,
        "preprocessing": spec.to_json(),
        "groups": args.groups,
        "c": args.c,
        "summary": summarize(scored, 0.5, square),
    }
    _table(
        console,
        f"frozen {args.arch} ({args.resize}), held out by {args.groups}",
        {"probe": report["summary"]},
    )
    return report


def _features(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from aiscan.model.clip import CLIP_B16, PIXEL_REGIMES
    from aiscan.model.clip_graph import GRAPH_VERSION, cached_feature_encoder

    from .data import find_samples
    from .features import Encoder, claim_precision, claim_preprocessing, extract

    views = parse_views(args.views)
    spec = PIXEL_REGIMES[args.pixels]
    samples = find_samples(args.data_dirs)
    claim_precision(args.out, args.precision)
    claim_preprocessing(args.out, spec)
    encoder = Encoder(cached_feature_encoder(args.precision), args.threads)
    out = Path(args.out)
    for view in views:
        extract(samples, encoder, spec, out, view, args.batch_size, log=console.print)
    report = {
        "encoder": CLIP_B16.upstream,
        "encoder_sha256": CLIP_B16.sha256,
        "precision": args.precision,
        "graph_version": GRAPH_VERSION,
        "pixels": args.pixels,
        "preprocessing": spec.to_json(),
        "data_dirs": [str(Path(d).resolve()) for d in args.data_dirs],
        "samples": len(samples),
        "views": views,
    }
    return report


def head_config(args: argparse.Namespace) -> Any:
    """The :class:`~aiscan.train.heads.HeadConfig` of a ``heads`` command line."""
    from .heads import HeadConfig

    return HeadConfig(
        head=args.head,
        features=args.on,
        c=args.c,
        hidden=args.hidden,
        epochs=args.epochs,
        weight_decay=args.weight_decay,
        balance=args.balance,
        views=parse_views(args.views),
        also=tuple(str(Path(c).resolve()) for c in args.also_features),
    )


def _heads(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    import dataclasses

    import numpy as np

    from .data import find_samples
    from .features import features_graph, features_precision, features_preprocessing
    from .heads import left_out_mask, load_views, out_of_source
    from .protocol import (
        band_edge,
        edge_by_fold,
        operating_point,
        save_scored,
        summarize,
        threshold_at_fpr,
    )

    config = head_config(args)
    trained_on = find_samples(args.data_dirs)
    scored_only = find_samples(args.score_only) if args.score_only else []
    samples = trained_on + scored_only
    trainable = np.arange(len(samples)) < len(trained_on)
    trainable &= left_out_mask(samples, args.score_only_source)
    views = load_views(args.features, samples, config)
    scored = out_of_source(samples, views, config, args.groups, trainable)
    ok = np.isfinite(scored.p_ai)
    kept = dataclasses.replace(
        scored,
        samples=[s for s, k in zip(scored.samples, ok, strict=True) if k],
        p_ai=scored.p_ai[ok],
        fold=scored.fold[ok],
    )
    summary = summarize(kept, 0.5)
    points = {}
    for fpr in (0.01, 0.05):
        t = threshold_at_fpr(kept.is_ai, kept.p_ai, fpr)
        points[f"fpr_{fpr:g}"] = operating_point(kept, t)
    edge = band_edge(kept, args.promise)
    points["edge"] = dict(operating_point(kept, edge.threshold), rule=edge.rule)
    edge_cv = edge_by_fold(kept, args.promise)
    transfer = _transfer(kept, set(map(id, scored_only)), args.promise) if scored_only else None
    report = {
        "config": dataclasses.asdict(config),
        "groups": args.groups,
        "data_dirs": [str(Path(d).resolve()) for d in args.data_dirs],
        "score_only": [str(Path(d).resolve()) for d in args.score_only],
        "score_only_sources": sorted(set(args.score_only_source)),
        "features_cache": str(Path(args.features).resolve()),
        "features_precision": features_precision(Path(args.features)),
        "features_graph": features_graph(Path(args.features)),
        "features_preprocessing": features_preprocessing(Path(args.features)).to_json(),
        "promise": args.promise,
        "undecodable": int((~ok).sum()),
        "summary": summary,
        "operating_points": points,
        "edge_by_fold": edge_cv,
    }
    if transfer is not None:
        report["transfer"] = transfer
    save_scored(kept, Path(args.out).with_suffix(".scores.csv"))
    console.print(
        f"{config.head} on {config.features}, views {'+'.join(config.views)}, held out by "
        f"{args.groups}: pooled AUC {summary['pooled_auc']:.4f}, mean source AUC "
        f"{summary['mean_source_auc']:.4f}, worst {summary['worst_source_auc']:.4f} "
        f"({summary['worst_source']}), TPR@1% {summary['tpr_at_fpr_1pct']:.3f}, "
        f"TPR@5% {summary['tpr_at_fpr_5pct']:.3f}"
    )
    kinds = ", ".join(f"{k} {v['flagged']:.3f}" for k, v in edge_cv["by_kind"].items())
    console.print(
        f"edge set without each fold, on that fold: FPR {edge_cv['fpr']:.3f} (promise "
        f"{args.promise:g}), TPR {edge_cv['tpr']:.3f}; {kinds}"
    )
    shown = dict(points)
    if transfer is not None:
        shown["edge of the trained-on sources, on the scored-only ones"] = transfer["scored_only"]
    for key, pt in shown.items():
        flagged = {k: v["flagged"] for k, v in pt["by_category"].items() if "flagged" in v}
        console.print(
            f"{key}: threshold {pt['threshold']:.4f}, TPR {pt['tpr']:.3f}, FPR {pt['fpr']:.3f}; "
            + ", ".join(f"{k} {v:.2f}" for k, v in flagged.items())
        )
    return report


def _transfer(kept: Any, scored_only: set[int], promise: float) -> dict[str, Any]:
    """Does a band promise transfer to sources it was not set on? The edge from the
    held-out scores of the trained-on sources alone, and what it does on the sources that
    were only scored (new kinds, new generators: what a hidden test set measures)."""
    import numpy as np

    from .protocol import Scored, band_edge, operating_point

    only = np.array([id(s) in scored_only for s in kept.samples])

    def part(mask: np.ndarray) -> Scored:
        picked = [s for s, k in zip(kept.samples, mask, strict=True) if k]
        return Scored(picked, kept.p_ai[mask], kept.fold[mask])

    trained, other = part(~only), part(only)
    edge = band_edge(trained, promise)
    return {
        "edge": edge.threshold,
        "rule": edge.rule,
        "raised_by": edge.binding,
        "trained_on": operating_point(trained, edge.threshold),
        "scored_only": operating_point(other, edge.threshold),
    }


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        commands = {
            "folds": _folds,
            "ensemble": _ensemble,
            "probe": _probe,
            "features": _features,
            "heads": _heads,
        }
        run = commands[args.command]
        report = run(args, console)
    except ValueError as exc:
        return error_line("aiscan-protocol", exc)
    target = args.out
    if args.command == "probe":
        target = Path(args.out) / f"probe_{args.arch}_{args.resize}_{args.groups}.json"
    elif args.command == "features":
        target = Path(args.out) / f"features_{args.precision}.json"
    if target:
        Path(target).write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {target}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``aiscan-protocol``: a missing optional dependency is one line and exit 2."""
    from aiscan.model.console import run_cli

    return run_cli("aiscan-protocol", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
