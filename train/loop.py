"""The training loop: the report's recipe, checkpoints every epoch, resumable, seeded."""

from __future__ import annotations

import csv
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aiscan.model.errors import UsageError
from aiscan.model.meta import LABELS, POSITIVE_LABEL, p_ai
from aiscan.model.pixels import RegionFn
from aiscan.model.preprocessing import DECODE_MODES, Preprocessing

from .augment import RandomRegion, report_augmentations
from .data import (
    ImageDataset,
    Sample,
    find_samples,
    holdout_split,
    load_split,
    make_collate,
    parse_fold,
    save_split,
    stratified_split,
)

Event = Callable[[str, dict[str, Any]], None]


#: Normalisations a backbone may have been pretrained with (mean, std).
NORMS = {
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # the report's; TF EfficientNet-Lite
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision models
}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the report's recipe.

    Attributes:
        data_dirs: folders with ``ai/`` and ``real/`` class folders.
        out_dir: run folder: split, config, checkpoints, history.
        arch: timm architecture.
        init: local weights to start from (None: random initialisation).
        freeze_backbone: train the classifier only (the report's ablation); the frozen
            body also keeps its batch-norm statistics.
        epochs, batch_size, lr, weight_decay: the optimiser recipe (Adam).
        input_size: model input side in pixels.
        resize: the model's resize policy, "squash" or "crop" (see
            :class:`~aiscan.model.pixels.Preprocessing`); crops are random in training.
        decode: "draft" or "full" JPEG decoding (see
            :class:`~aiscan.model.preprocessing.Preprocessing`): the scanner follows it.
        crop_scale: smallest side of a random training crop, relative to the largest
            that fits ("crop" policy; 1.0: full-size crops at random places).
        norm: input normalisation, a key of :data:`NORMS` (the backbone's own).
        seed: split, initialisation, shuffling and augmentation.
        workers: DataLoader worker processes.
        amp: "auto" (bf16 autocast where the CPU or GPU supports it), "off".
        anti_shortcut: probability of random down-up rescale and JPEG re-encode.
        degrade: probability of Wang et al.'s blur and (independently) JPEG re-encode.
        body_lr_scale: learning rate of the body relative to the head's ``lr``.
        head_init: "timm" (timm's default for the classifier) or "small" (N(0, 0.01), zero
            bias: starts near p = 0.5 instead of timm's large random logits).
        balance: "none", or "source": sample every class equally and, within a class, each
            source in proportion to the square root of its size.
        select: which epoch ``best.pth`` keeps: "val_auc" (best validation AUC) or "last".
        fold: "I/K" holds out the sources of fold I of K (grouped cross-validation): they
            form the "test" split, scored after every epoch into ``holdout/``.
        limit: at most this many images per split (quick experiments, tests).
        device: "auto", "cpu" or "cuda".
    """

    data_dirs: tuple[str, ...]
    out_dir: str
    arch: str = "efficientnet_b0"
    init: str | None = None
    freeze_backbone: bool = False
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    input_size: int = 224
    resize: str = "squash"
    decode: str = "draft"
    crop_scale: float = 1.0
    norm: str = "half"
    seed: int = 0
    workers: int = 1
    amp: str = "auto"
    anti_shortcut: float = 0.0
    degrade: float = 0.0
    body_lr_scale: float = 1.0
    head_init: str = "timm"
    balance: str = "none"
    select: str = "val_auc"
    fold: str | None = None
    limit: int | None = None
    device: str = "auto"

    #: The allowed values of the fields that take a name (``aiscan-train`` offers these).
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "amp": ("auto", "off"),
        "device": ("auto", "cpu", "cuda"),
        "norm": tuple(NORMS),
        "decode": DECODE_MODES,
        "head_init": ("timm", "small"),
        "balance": ("none", "source"),
        "select": ("val_auc", "last"),
    }

    def __post_init__(self) -> None:
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("anti_shortcut", "degrade"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"{name} is a probability, got {getattr(self, name)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError("epochs and batch_size must be positive")
        if not 0.0 < self.body_lr_scale <= 10.0:
            raise UsageError(f"body_lr_scale must be within (0, 10], got {self.body_lr_scale}")
        if self.fold is not None:
            parse_fold(self.fold)
        self.spec()  # validates resize and input_size
        RandomRegion(self.crop_scale)  # validates crop_scale

    def spec(self) -> Preprocessing:
        """The preprocessing the model is trained with (and exported with)."""
        mean, std = NORMS[self.norm]
        return Preprocessing(
            input_size=(self.input_size, self.input_size),
            mean=mean,
            std=std,
            resize=self.resize,
            decode=self.decode,
        )


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
    config_path, split_path = out / "config.json", out / "split.csv"
    current = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as saved
    if split_path.exists() and config_path.exists():
        saved = json.loads(config_path.read_text())
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed == ["epochs"] and current["epochs"] > saved["epochs"]:
            # More epochs of the same run: the learning rate is constant, so this is the
            # run it would have been with the larger count from the start.
            config_path.write_text(json.dumps(current, indent=2) + "\n")
        elif changed:
            raise UsageError(
                f"{out} holds a run with other settings ({', '.join(changed)}); "
                "use a new --out or the same settings (only --epochs may grow)"
            )
        return load_split(split_path)
    samples = find_samples(cfg.data_dirs)
    if cfg.fold:
        split = holdout_split(samples, cfg.fold, seed=cfg.seed)
    else:
        split = stratified_split(samples, seed=cfg.seed)
    if cfg.limit:
        split = {k: _limited(v, cfg.limit, cfg.seed) for k, v in split.items()}
    empty = [name for name in ("train", "val") if not split[name]]
    if empty:
        raise UsageError(
            f"too few images in {', '.join(cfg.data_dirs)} for a {' and '.join(empty)} split"
        )
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves no folder behind
    save_split(split, split_path)
    config_path.write_text(json.dumps(current, indent=2) + "\n")
    return split


def _limited(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    if len(samples) <= limit:
        return samples
    keep = sorted(rng.choice(len(samples), limit, replace=False))
    return [samples[i] for i in keep]


def _loader(
    samples: list[Sample],
    spec: Preprocessing,
    cfg: TrainConfig,
    train: bool,
    epoch: int,
    region: RegionFn | None = None,
) -> Any:
    import torch

    augment = report_augmentations(cfg.anti_shortcut, cfg.degrade) if train else None
    if train:
        region = RandomRegion(cfg.crop_scale)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    sampler = None
    if train and cfg.balance == "source":
        sampler = torch.utils.data.WeightedRandomSampler(
            source_balanced_weights(samples), len(samples), generator=generator
        )
    return torch.utils.data.DataLoader(
        ImageDataset(samples, spec, augment, region),
        batch_size=cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=make_collate(spec),
        generator=generator,
        persistent_workers=False,
    )


def source_balanced_weights(samples: list[Sample]) -> list[float]:
    """Sampling weights: each class half the draws; within a class, each source in
    proportion to the square root of its size (big sources count less per image)."""
    sizes = Counter((s.label, s.source) for s in samples)
    mass = {label: 0.0 for label, _ in sizes}
    for (label, _), n in sizes.items():
        mass[label] += n**0.5
    return [1.0 / (sizes[(s.label, s.source)] ** 0.5 * mass[s.label]) for s in samples]


def predict(model: Any, loader: Any, device: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """p_ai and labels for every sample of ``loader``."""
    import torch

    model.eval()
    scores, labels = [], []
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for x, y in loader:
            logits = model(x.to(device, memory_format=torch.channels_last)).float()
            scores.append(p_ai(logits.cpu().numpy(), LABELS, "logits"))
            labels.append(y.numpy())
    return np.concatenate(scores), np.concatenate(labels)


def _save(obj: dict[str, Any], path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _optimizer(model: Any, cfg: TrainConfig) -> Any:
    """Adam with the head at ``lr`` and the body at ``lr * body_lr_scale``."""
    import torch

    head = {id(p) for p in model.get_classifier().parameters()}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad and id(p) in head]},
        {
            "params": [p for p in model.parameters() if p.requires_grad and id(p) not in head],
            "lr": cfg.lr * cfg.body_lr_scale,
        },
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(cfg: TrainConfig, on_event: Event | None = None) -> History:
    """Run (or resume) training; checkpoints land in ``cfg.out_dir`` every epoch."""
    import torch

    from .metrics import binary_metrics
    from .model import create

    emit = on_event or (lambda _kind, _data: None)
    split = prepare_run(cfg)
    out = Path(cfg.out_dir)
    spec = cfg.spec()
    device = _device(cfg.device)
    dtype = _autocast_dtype(device, cfg.amp)
    torch.manual_seed(cfg.seed)
    model = create(cfg.arch, cfg.init, cfg.freeze_backbone, head_init=cfg.head_init).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, cfg)
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
        random.seed(cfg.seed * 1000 + epoch)
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
        val = binary_metrics(labels == LABELS.index(POSITIVE_LABEL), scores, threshold=0.5)
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "train_acc": acc,
            "val_auc": val["roc_auc"],
            "val_acc": val["accuracy"],
        }
        if cfg.fold and split.get("test"):
            row["holdout_auc"] = score_holdout(
                model, split["test"], spec, cfg, device, dtype, epoch
            )
        row["seconds"] = time.perf_counter() - t0
        history.epochs.append(row)
        _checkpoint(out, model, optimizer, history, cfg, spec, epoch, val)
        emit("epoch_end", row)
    return history


def score_holdout(
    model: Any,
    samples: list[Sample],
    spec: Preprocessing,
    cfg: TrainConfig,
    device: Any,
    dtype: Any,
    epoch: int,
) -> float:
    """Score the held-out sources; write ``holdout/epoch_<N>.csv``; return their ROC AUC.

    Columns: path, label, source, p_ai (the scanner's centred region) and, for the "crop"
    policy, p_ai_3crop: the mean p_ai of three regions along the long side (start, centre,
    end), the test-time multi-crop candidate.
    """
    from functools import partial

    from aiscan.model.pixels import view_region

    from .metrics import binary_metrics

    views = [0.5] + ([0.0, 1.0] if spec.resize == "crop" else [])
    centre = predict(model, _loader(samples, spec, cfg, False, epoch), device, dtype)[0]
    columns = {pos: centre.copy() for pos in views}
    # Off-centre regions differ from the centred one only where the aspect differs.
    aspect = round(spec.input_size[1] / spec.input_size[0], 3)
    other = [i for i, s in enumerate(samples) if _aspect(s.path) != aspect]
    for pos in views[1:]:
        if other:
            sub = [samples[i] for i in other]
            loader = _loader(sub, spec, cfg, False, epoch, partial(view_region, pos=pos))
            columns[pos][other] = predict(model, loader, device, dtype)[0]
    folder = Path(cfg.out_dir) / "holdout"
    folder.mkdir(exist_ok=True)
    tmp = folder / f"epoch_{epoch + 1}.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["path", "label", "source", "p_ai"] + (["p_ai_3crop"] if len(views) > 1 else [])
        )
        for i, s in enumerate(samples):
            multi = [f"{np.mean([columns[v][i] for v in views]):.6g}"] if len(views) > 1 else []
            writer.writerow([s.path, LABELS[s.label], s.source, f"{centre[i]:.6g}", *multi])
    tmp.replace(folder / f"epoch_{epoch + 1}.csv")
    is_ai = np.array([s.is_ai for s in samples])
    return float(binary_metrics(is_ai, centre, threshold=0.5)["roc_auc"])


def _aspect(path: str) -> float:
    """Width / height after EXIF orientation, from the header."""
    from aiscan.model.pixels import open_image, oriented_size

    with open_image(path) as img:
        w, h = oriented_size(img)
    return round(w / h, 3)


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
    """After an epoch: best.pth when validation AUC improved (or every epoch with
    ``select="last"``), checkpoint_last.pth always."""
    if cfg.select == "last" or val["roc_auc"] > history.best_val_auc:
        history.best_val_auc, history.best_epoch = val["roc_auc"], epoch
        _save(
            {
                "model": model.state_dict(),
                "arch": cfg.arch,
                "labels": list(LABELS),
                "preprocessing": spec.to_json(),
                "epoch": epoch,
                "val": val,
                "config": json.loads(json.dumps(asdict(cfg))),  # JSON types, as in metadata
            },
            out / "best.pth",
        )
    _save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "history": asdict(history),
            "config": json.loads(json.dumps(asdict(cfg))),  # JSON types, as in metadata
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
