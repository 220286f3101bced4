"""The training loop: the report's recipe, checkpoints every epoch, resumable, seeded."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.scanner.preprocess import Preprocessing
from aiscan.train.augment import report_augmentations
from aiscan.train.data import (
    LABELS,
    ImageDataset,
    Sample,
    find_samples,
    load_split,
    make_collate,
    save_split,
    stratified_split,
)

Event = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the report's recipe.

    Attributes:
        data_dir: folder with ``ai/`` and ``real/`` class folders.
        out_dir: run folder: split, config, checkpoints, history.
        arch: timm architecture.
        init: local weights to start from (None: random initialisation).
        freeze_backbone: train the classifier only (the report's ablation); the frozen
            body also keeps its batch-norm statistics.
        epochs, batch_size, lr, weight_decay: the optimiser recipe (Adam).
        input_size: model input side in pixels.
        seed: split, initialisation, shuffling and augmentation.
        workers: DataLoader worker processes.
        amp: "auto" (bf16 autocast where the CPU or GPU supports it), "off".
        anti_shortcut: probability of random down-up rescale and JPEG re-encode.
        limit: at most this many images per split (quick experiments, tests).
        device: "auto", "cpu" or "cuda".
    """

    data_dir: str
    out_dir: str
    arch: str = "efficientnet_b0"
    init: str | None = None
    freeze_backbone: bool = False
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    input_size: int = 224
    seed: int = 0
    workers: int = 1
    amp: str = "auto"
    anti_shortcut: float = 0.0
    limit: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.amp not in ("auto", "off"):
            raise ValueError(f"amp must be 'auto' or 'off', got {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not 0.0 <= self.anti_shortcut <= 1.0:
            raise ValueError(f"anti_shortcut is a probability, got {self.anti_shortcut}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_auc: float = -1.0


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _autocast_dtype(device: Any, amp: str) -> Any:
    import torch

    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def prepare_run(cfg: TrainConfig) -> dict[str, list[Sample]]:
    """Create the run folder with its split and config, or check and reuse them."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path, split_path = out / "config.json", out / "split.csv"
    if split_path.exists() and config_path.exists():
        saved = json.loads(config_path.read_text())
        if saved != asdict(cfg):
            changed = sorted(k for k in saved if saved[k] != asdict(cfg).get(k))
            raise ValueError(
                f"{out} holds a run with other settings ({', '.join(changed)}); "
                "use a new --out or the same settings"
            )
        return load_split(split_path)
    split = stratified_split(find_samples(cfg.data_dir), seed=cfg.seed)
    if cfg.limit:
        split = {k: _limited(v, cfg.limit, cfg.seed) for k, v in split.items()}
    empty = [name for name in ("train", "val") if not split[name]]
    if empty:
        raise ValueError(f"too few images in {cfg.data_dir} for a {' and '.join(empty)} split")
    save_split(split, split_path)
    config_path.write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return split


def _limited(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    if len(samples) <= limit:
        return samples
    keep = sorted(rng.choice(len(samples), limit, replace=False))
    return [samples[i] for i in keep]


def _loader(
    samples: list[Sample], spec: Preprocessing, cfg: TrainConfig, train: bool, epoch: int
) -> Any:
    import torch

    augment = report_augmentations(cfg.anti_shortcut) if train else None
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    return torch.utils.data.DataLoader(
        ImageDataset(samples, spec, augment),
        batch_size=cfg.batch_size,
        shuffle=train,
        num_workers=cfg.workers,
        collate_fn=make_collate(spec),
        generator=generator,
        persistent_workers=False,
    )


def predict(model: Any, loader: Any, device: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """p_ai and labels for every sample of ``loader``."""
    import torch

    model.eval()
    scores, labels = [], []
    ai = LABELS.index("ai")
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for x, y in loader:
            logits = model(x.to(device, memory_format=torch.channels_last)).float()
            scores.append(torch.softmax(logits, dim=1)[:, ai].cpu().numpy())
            labels.append(y.numpy())
    return np.concatenate(scores), np.concatenate(labels)


def _save(obj: dict[str, Any], path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train(cfg: TrainConfig, on_event: Event | None = None) -> History:
    """Run (or resume) training; checkpoints land in ``cfg.out_dir`` every epoch."""
    import torch

    from aiscan.train.metrics import binary_metrics
    from aiscan.train.model import create

    emit = on_event or (lambda _kind, _data: None)
    split = prepare_run(cfg)
    out = Path(cfg.out_dir)
    spec = Preprocessing(input_size=(cfg.input_size, cfg.input_size))
    device = _device(cfg.device)
    dtype = _autocast_dtype(device, cfg.amp)
    torch.manual_seed(cfg.seed)
    model = create(cfg.arch, cfg.init, cfg.freeze_backbone).to(device)
    model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, start = History(), 0
    last = out / "checkpoint_last.pth"
    if last.exists():
        state = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = History(**state["history"])
        start = state["epoch"] + 1
        emit("resumed", {"epoch": start})
    val_loader = _loader(split["val"], spec, cfg, train=False, epoch=0)
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)
        t0 = time.perf_counter()
        loss, acc = _train_epoch(
            model,
            _loader(split["train"], spec, cfg, True, epoch),
            optimizer,
            device,
            dtype,
            cfg,
            epoch,
            emit,
        )
        scores, labels = predict(model, val_loader, device, dtype)
        val = binary_metrics(labels == LABELS.index("ai"), scores, threshold=0.5)
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "train_acc": acc,
            "val_auc": val["roc_auc"],
            "val_acc": val["accuracy"],
            "seconds": time.perf_counter() - t0,
        }
        history.epochs.append(row)
        _checkpoint(out, model, optimizer, history, cfg, spec, epoch, val)
        emit("epoch_end", row)
    return history


def _checkpoint(
    out: Path,
    model: Any,
    optimizer: Any,
    history: History,
    cfg: TrainConfig,
    spec: Preprocessing,
    epoch: int,
    val: dict[str, float],
) -> None:
    """After an epoch: best.pth when validation AUC improved, checkpoint_last.pth always."""
    if val["roc_auc"] > history.best_val_auc:
        history.best_val_auc, history.best_epoch = val["roc_auc"], epoch
        _save(
            {
                "model": model.state_dict(),
                "arch": cfg.arch,
                "labels": list(LABELS),
                "preprocessing": spec.to_json(),
                "epoch": epoch,
                "val": val,
                "config": asdict(cfg),
            },
            out / "best.pth",
        )
    _save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "history": asdict(history),
            "config": asdict(cfg),
        },
        out / "checkpoint_last.pth",
    )
    (out / "history.json").write_text(json.dumps(asdict(history), indent=2) + "\n")


def _train_epoch(
    model: Any,
    loader: Any,
    optimizer: Any,
    device: Any,
    dtype: Any,
    cfg: TrainConfig,
    epoch: int,
    emit: Event,
) -> tuple[float, float]:
    import torch

    model.train()
    if cfg.freeze_backbone:  # frozen body: batch-norm statistics stay as loaded
        model.eval()
        model.get_classifier().train()
    total_loss, correct, seen = 0.0, 0, 0
    emit("epoch_start", {"epoch": epoch, "batches": len(loader)})
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        emit(
            "batch",
            {"epoch": epoch, "step": step + 1, "loss": total_loss / seen, "acc": correct / seen},
        )
    return total_loss / seen, correct / seen
