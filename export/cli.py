"""``aiscan-export``: a training run, an ensemble of runs, or a timm arch + checkpoint, to an
aiscan ONNX model."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiscan.model.console import Parser, error_line, show_defaults
from aiscan.model.errors import UsageError
from aiscan.model.preprocessing import DECODE_MODES, RESIZE_POLICIES, Preprocessing


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="aiscan-export", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="an aiscan-train run folder (uses its best.pth)")
    src.add_argument(
        "--ensemble",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="two or more runs of one split: one model, the mean of their probabilities",
    )
    src.add_argument("--checkpoint", type=Path, help="state_dict (.pth) of a trained model")
    src.add_argument(
        "--clip-head",
        type=Path,
        metavar="REPORT",
        help="an aiscan-protocol heads report: fit its head on all its images and write it "
        "as a CLIP head model (its bands from the report's held-out scores)",
    )
    src.add_argument(
        "--card",
        type=Path,
        metavar="MODEL",
        help="write the card of an aiscan model (Markdown, from its metadata alone) to --out",
    )
    src.add_argument(
        "--random-init",
        action="store_true",
        help="untrained weights, marked as such (benchmarks and tests only)",
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model-id", help="name written into the model (default: from the arch)")
    run = p.add_argument_group("with --run or --ensemble")
    run.add_argument(
        "--target-fpr",
        type=float,
        help="threshold with at most this FPR on validation (default: max F1)",
    )
    run.add_argument(
        "--protocol",
        metavar="JSON[:EPOCH]",
        help="aiscan-protocol folds report of this recipe: its summary (at EPOCH, default "
        "the run's epoch count) goes into the model's metadata; with --ensemble, an "
        "aiscan-protocol ensemble report",
    )
    run.add_argument(
        "--threshold-from",
        choices=("validation", "protocol"),
        default="validation",
        help="validation: max F1 (or --target-fpr) on the run's validation split; protocol: "
        "best balanced accuracy on the protocol's out-of-source scores",
    )
    run.add_argument(
        "--fp32-weights",
        action="store_true",
        help="with --ensemble: store weights in float32 (default: float16, computed in fp32)",
    )
    run.add_argument(
        "--variants",
        default="",
        metavar="fp16,int8",
        help="also write reduced-precision variants next to --out",
    )
    run.add_argument(
        "--calibration-images",
        type=int,
        default=256,
        help="training images that calibrate the int8 variant",
    )
    head = p.add_argument_group("with --clip-head")
    head.add_argument(
        "--fpr", type=float, default=0.05, help="held-out false-alarm rate of the 'ai' threshold"
    )
    head.add_argument(
        "--miss",
        type=float,
        default=0.10,
        help="held-out share of AI images under the 'real' edge (the uncertain band's floor)",
    )
    head.add_argument(
        "--levers",
        type=Path,
        metavar="JSON",
        help="the lever table for the model card (train/recipes/levers.py writes it)",
    )
    arch = p.add_argument_group("with --checkpoint or --random-init")
    arch.add_argument("--arch", default="efficientnet_b0", help="timm model name")
    arch.add_argument("--input-size", type=int, default=224)
    arch.add_argument("--resize", default="squash", choices=RESIZE_POLICIES)
    arch.add_argument("--decode", default="draft", choices=DECODE_MODES, help="JPEG decoding")
    arch.add_argument("--threshold", type=float, default=0.5)
    arch.add_argument("--seed", type=int, default=0)
    return show_defaults(p)


def _protocol(spec: str | None, run: Path | None) -> dict[str, Any] | None:
    """The summary of one epoch of an ``aiscan-protocol folds`` report, or of an
    ``aiscan-protocol ensemble`` report."""
    if spec is None:
        return None
    path, _, epoch = spec.partition(":")
    report = json.loads(Path(path).read_text())
    if "summary" in report and "members" in report:
        if epoch:
            raise UsageError(f"{path} is an ensemble report: it has no epochs to choose from")
        return dict(report["summary"], report=str(path))
    if "epochs" not in report:
        raise UsageError(f"{path} is not an aiscan-protocol folds or ensemble report")
    epochs = report["epochs"]
    if not epoch:
        if run is None:
            raise UsageError(f"{path}: say which epoch (JSON:EPOCH)")
        epoch = str(json.loads((run / "config.json").read_text())["epochs"])
    if epoch not in epochs:
        raise UsageError(f"{path} has no epoch {epoch} (it has {', '.join(epochs)})")
    return dict(epochs[epoch], epoch=int(epoch), report=str(path))


def _from_run(args: argparse.Namespace) -> int:
    from .ensemble import export_ensemble, fp32_companion
    from .from_run import export_run, export_variant

    try:
        protocol = _protocol(args.protocol, args.run)
        common: dict[str, Any] = {
            "model_id": args.model_id,
            "target_fpr": args.target_fpr,
            "protocol": protocol,
            "protocol_threshold": args.threshold_from == "protocol",
        }
        if args.ensemble:
            info = export_ensemble(
                args.ensemble, args.out, fp16_weights=not args.fp32_weights, **common
            )
        else:
            info = export_run(args.run, args.out, **common)
    except (ValueError, OSError) as exc:
        return error_line("aiscan-export", exc)
    val, par = info.extra["validation"], info.extra["parity"]
    print(
        f"wrote {args.out}: threshold {info.threshold:.4f} ({info.extra['threshold_rule']}), "
        f"val AUC {val['roc_auc']:.4f}, acc {val['accuracy']:.4f}; max |p_ai torch - onnx| "
        f"{par['max_abs_diff_p_ai']:.2e} on {par['images']} images"
    )
    run_dir = args.run or args.out.parent  # an ensemble's folder holds its split
    source = fp32_companion(args.out) if args.ensemble and not args.fp32_weights else args.out
    for variant in filter(None, args.variants.split(",")):
        path = export_variant(run_dir, source, variant, args.calibration_images)
        if source != args.out:  # name it after the shipped file, not its fp32 source
            path = path.replace(args.out.with_name(f"{args.out.stem}.{variant}.onnx"))
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run or args.ensemble:
        return _from_run(args)
    if args.clip_head:
        return _from_clip_head(args)
    if args.card:
        return _card(args)
    try:
        out = _from_checkpoint(args)
    except (ValueError, OSError, RuntimeError) as exc:  # no such file or arch, wrong weights
        return error_line("aiscan-export", exc)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _from_clip_head(args: argparse.Namespace) -> int:
    from .clip_head import export_clip_head

    try:
        levers = json.loads(args.levers.read_text()) if args.levers else None
        info = export_clip_head(
            args.clip_head,
            args.out,
            args.model_id or "aiscan-clip-v1",
            args.fpr,
            args.miss,
            levers=levers,
        )
    except (ValueError, OSError, KeyError) as exc:
        return error_line("aiscan-export", exc)
    at = info.extra["bands"]["at_threshold"]
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): ai at p_ai >= "
        f"{info.threshold:.4f} (held-out TPR {at['tpr']:.3f}, FPR {at['fpr']:.3f}), real below "
        f"{info.real_below:.4f}"
    )
    return 0


def _card(args: argparse.Namespace) -> int:
    from aiscan.model.files import write_atomic

    from .card import card_of

    try:
        write_atomic(args.out, card_of(args.card), fsync=False)
    except (ValueError, OSError) as exc:
        return error_line("aiscan-export", exc)
    print(f"wrote {args.out}")
    return 0


def _from_checkpoint(args: argparse.Namespace) -> Path:
    """A timm architecture with a checkpoint's (or random) weights, exported."""
    import torch

    from aiscan.model.factory import create
    from aiscan.model.meta import ModelInfo

    from .onnx_export import export_onnx

    torch.manual_seed(args.seed)
    model = create(args.arch)
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state))
    size = args.input_size
    suffix = "-untrained" if args.random_init else ""
    info = ModelInfo(
        model_id=args.model_id or f"aiscan-{args.arch}{suffix}",
        arch=args.arch,
        preprocessing=Preprocessing(
            input_size=(size, size), resize=args.resize, decode=args.decode
        ),
        threshold=args.threshold,
        trained=not args.random_init,
    )
    return export_onnx(model, info, args.out)


def main(argv: Sequence[str] | None = None) -> int:
    """``aiscan-export``: a missing optional dependency is one line and exit 2."""
    from aiscan.model.console import run_cli

    return run_cli("aiscan-export", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
