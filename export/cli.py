"""``aiscan-export``: a timm architecture (+ checkpoint) to an aiscan ONNX model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aiscan-export", description=__doc__)
    p.add_argument("--arch", default="efficientnet_b0", help="timm model name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="an aiscan-train run folder (uses its best.pth)")
    src.add_argument("--checkpoint", type=Path, help="state_dict (.pth) of a trained model")
    src.add_argument(
        "--random-init",
        action="store_true",
        help="untrained weights, marked as such (benchmarks and tests only)",
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model-id", help="name written into the model (default: from --arch)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--target-fpr",
        type=float,
        help="--run: threshold with at most this FPR on validation (default: max F1)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run:
        from aiscan.export.from_run import export_run

        info = export_run(args.run, args.out, model_id=args.model_id, target_fpr=args.target_fpr)
        val, par = info.extra["validation"], info.extra["parity"]
        print(
            f"wrote {args.out}: threshold {info.threshold:.4f} ({info.extra['threshold_rule']}), "
            f"val AUC {val['roc_auc']:.4f}, acc {val['accuracy']:.4f}; max |p_ai torch - onnx| "
            f"{par['max_abs_diff_p_ai']:.2e} on {par['images']} images"
        )
        return 0
    import timm
    import torch

    from aiscan.export.onnx_export import export_onnx
    from aiscan.scanner.modelmeta import ModelInfo
    from aiscan.scanner.preprocess import Preprocessing

    torch.manual_seed(args.seed)
    model = timm.create_model(args.arch, num_classes=2, pretrained=False)
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state))
    size = args.input_size
    info = ModelInfo(
        model_id=args.model_id
        or f"aiscan-{args.arch}" + ("-untrained" if args.random_init else ""),
        arch=args.arch,
        preprocessing=Preprocessing(input_size=(size, size)),
        threshold=args.threshold,
        trained=not args.random_init,
    )
    out = export_onnx(model, info, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
