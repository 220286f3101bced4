"""The one place that builds a timm model for an architecture name.

An ``aiscan.arch`` is a timm name (``efficientnet_b0``) or, for an ensemble, several joined
by ``+`` (``tf_efficientnet_lite0+efficientnet_b0``): :func:`create` builds either, with
a head of one output per label. Weights are never downloaded: loading them is the
caller's business (``aiscan.train.model.load_init``, ``load_state_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .meta import LABELS

#: Separates the members' architectures in an ensemble's ``aiscan.arch``.
ARCH_SEPARATOR = "+"


def member_archs(arch: str) -> list[str]:
    """The timm architectures of an ``aiscan.arch`` (one for a single model)."""
    return arch.split(ARCH_SEPARATOR)


def create(arch: str, num_classes: int = len(LABELS)) -> Any:
    """An untrained timm model (``pretrained=False``), or for an ensemble's ``a+b`` the
    mean of untrained members, each fed the input as it is."""
    import timm

    models = [
        timm.create_model(a, num_classes=num_classes, pretrained=False) for a in member_archs(arch)
    ]
    if len(models) == 1:
        return models[0]
    return mean_of_members(models, [([1.0] * 3, [0.0] * 3)] * len(models))


def mean_of_members(models: Sequence[Any], affine: Sequence[tuple[Any, Any]]) -> Any:
    """A torch module: the mean softmax of ``models``, member i fed ``x * scale_i + shift_i``.

    ``affine`` holds per-channel (scale, shift) sequences of 3 floats, one pair per member
    (each member's own normalisation, from the ensemble's input).
    """
    import torch

    class MeanOfMembers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(models)
            for i, (scale, shift) in enumerate(affine):
                self.register_buffer(f"scale{i}", torch.tensor(scale).view(1, 3, 1, 1))
                self.register_buffer(f"shift{i}", torch.tensor(shift).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            probs = [
                torch.softmax(m(x * getattr(self, f"scale{i}") + getattr(self, f"shift{i}")), 1)
                for i, m in enumerate(self.members)
            ]
            return torch.stack(probs).mean(0)

    return MeanOfMembers()
