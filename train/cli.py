"""``aiscan-train DATA_DIR --out RUN_DIR``: fine-tune a timm model, the report's recipe."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from aiscan.model.console import Parser, error_line, field_defaults, show_defaults
from aiscan.model.preprocessing import RESIZE_POLICIES

from .loop import TrainConfig

#: Every option's default is :class:`TrainConfig`'s: declared once, there.
DEFAULTS = field_defaults(TrainConfig)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="aiscan-train", description=__doc__)
    p.add_argument(
        "data_dirs",
        nargs="+",
        metavar="DATA_DIR",
        help="folders with ai/ and real/ class folders (any depth); several are pooled",
    )
    p.add_argument("--out", required=True, help="run folder (split, checkpoints, history)")
    p.add_argument("--arch", default=DEFAULTS["arch"], help="any timm model name")
    p.add_argument("--init", help="local weights to start from (.pth); default random init")
    p.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="train the classifier only (the report's ablation)",
    )
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    p.add_argument("--input-size", type=int, default=DEFAULTS["input_size"])
    p.add_argument(
        "--resize",
        default=DEFAULTS["resize"],
        choices=RESIZE_POLICIES,
        help="squash: whole image to the input size (stretches); crop: keep the aspect, "
        "centred region at scan time, random regions in training",
    )
    p.add_argument(
        "--decode",
        default=DEFAULTS["decode"],
        choices=TrainConfig.CHOICES["decode"],
        help="JPEG decoding, written into the model: draft (reduced DCT scale, never below "
        "the input size; fast) or full (every pixel); the scanner decodes the same way",
    )
    p.add_argument(
        "--crop-scale",
        type=float,
        default=DEFAULTS["crop_scale"],
        metavar="S",
        help="with --resize crop: random crops of S..1 times the largest side that fits",
    )
    p.add_argument(
        "--norm",
        default=DEFAULTS["norm"],
        choices=TrainConfig.CHOICES["norm"],
        help="the backbone's input normalisation",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--workers", type=int, default=DEFAULTS["workers"], help="DataLoader processes")
    p.add_argument(
        "--amp",
        default=DEFAULTS["amp"],
        choices=TrainConfig.CHOICES["amp"],
        help="bf16 autocast where supported (auto) or full fp32 (off)",
    )
    p.add_argument(
        "--anti-shortcut",
        type=float,
        default=DEFAULTS["anti_shortcut"],
        metavar="P",
        help="probability of random JPEG re-encode and down-up rescale",
    )
    p.add_argument(
        "--degrade",
        type=float,
        default=DEFAULTS["degrade"],
        metavar="P",
        help="probability of Gaussian blur (sigma 0-3) and of JPEG re-encode (q 30-100), "
        "both classes (Wang et al. 2020)",
    )
    p.add_argument(
        "--body-lr-scale",
        type=float,
        default=DEFAULTS["body_lr_scale"],
        help="learning rate of the body relative to --lr (the head's)",
    )
    p.add_argument(
        "--head-init",
        default=DEFAULTS["head_init"],
        choices=TrainConfig.CHOICES["head_init"],
        help="classifier initialisation: timm's default or N(0, 0.01) with zero bias",
    )
    p.add_argument(
        "--balance",
        default=DEFAULTS["balance"],
        choices=TrainConfig.CHOICES["balance"],
        help="source: classes drawn equally, sources within a class by sqrt(size)",
    )
    p.add_argument(
        "--select",
        default=DEFAULTS["select"],
        choices=TrainConfig.CHOICES["select"],
        help="epoch kept as best.pth: best validation AUC, or the last",
    )
    p.add_argument(
        "--fold",
        metavar="I/K",
        help="hold out the sources of fold I of K (grouped cross-validation): they are the "
        "test split, scored every epoch into RUN/holdout/",
    )
    p.add_argument("--limit", type=int, help="at most N images per split (quick runs)")
    p.add_argument("--device", default=DEFAULTS["device"], choices=TrainConfig.CHOICES["device"])
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    return show_defaults(p)


def _printer(console: Console) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = bar.add_task("train", total=None, epoch=0, loss=0.0, acc=0.0)

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "epoch_start":
            bar.start()
            bar.reset(task, total=data["batches"], epoch=data["epoch"] + 1, loss=0.0, acc=0.0)
        elif kind == "batch":
            bar.update(task, completed=data["step"], loss=data["loss"], acc=data["acc"])
            if not console.is_terminal and data["step"] % 50 == 0:
                console.print(
                    f"epoch {data['epoch'] + 1} step {data['step']}: loss "
                    f"{data['loss']:.4f} acc {data['acc']:.3f}",
                    highlight=False,
                )
        elif kind == "epoch_end":
            bar.stop()
            console.print(
                f"epoch {data['epoch'] + 1}: train loss {data['train_loss']:.4f} acc "
                f"{data['train_acc']:.3f} | val AUC {data['val_auc']:.4f} acc "
                f"{data['val_acc']:.3f}"
                + (f" | held-out AUC {data['holdout_auc']:.4f}" if "holdout_auc" in data else "")
                + f" | {data['seconds']:.0f} s",
                highlight=False,
            )
        elif kind == "resumed":
            console.print(f"resuming at epoch {data['epoch'] + 1}")

    return on_event


def _config(args: argparse.Namespace) -> TrainConfig:
    given = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    return TrainConfig(**{**given, "data_dirs": tuple(args.data_dirs), "out_dir": args.out})


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    from pathlib import Path

    from .loop import train

    try:
        cfg = _config(args)
    except ValueError as exc:
        return error_line("aiscan-train", exc)
    if (Path(args.out) / "checkpoint_last.pth").exists() and not args.resume:
        return error_line(
            "aiscan-train",
            f"{args.out} already has a checkpoint: pass --resume to continue it, or choose "
            "another --out",
        )
    try:
        history = train(cfg, _printer(console))
    except ValueError as exc:
        return error_line("aiscan-train", exc)
    console.print(
        f"best epoch {history.best_epoch + 1}: val AUC {history.best_val_auc:.4f}; "
        f"checkpoints in {args.out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``aiscan-train``: a missing optional dependency is one line and exit 2."""
    from aiscan.model.console import run_cli

    return run_cli("aiscan-train", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
