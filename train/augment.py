"""Training augmentations: the report's recipe, plus optional anti-shortcut transforms."""

from __future__ import annotations

from typing import Any


def report_augmentations(anti_shortcut: float = 0.0) -> Any:
    """The report's train transforms on a uint8 CHW tensor already resized by the scanner.

    Horizontal flip, rotation up to 10 degrees, colour jitter 0.2/0.2/0.2, translation up
    to 5%. With ``anti_shortcut`` > 0, that fraction of images (of both classes) is first
    shrunk by a random factor and scaled back up, and, independently, re-encoded as JPEG
    at a random quality, so that compression and resolution stop telling classes apart.
    """
    from torchvision.transforms import v2

    steps: list[Any] = []
    if anti_shortcut > 0:
        steps += [
            v2.RandomApply([_DownUp(0.4, 0.9)], p=anti_shortcut),
            v2.RandomApply([_JpegReencode(30, 95)], p=anti_shortcut),
        ]
    steps += [
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(10),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        v2.RandomAffine(degrees=0, translate=(0.05, 0.05)),
    ]
    return v2.Compose(steps)


class _DownUp:
    """Shrink by a random factor in [low, high], then scale back to the input size."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, img: Any) -> Any:
        import torch
        from torchvision.transforms.v2 import functional as F  # noqa: N812

        h, w = img.shape[-2:]
        factor = self.low + (self.high - self.low) * float(torch.rand(()))
        small = F.resize(img, [max(8, int(h * factor)), max(8, int(w * factor))], antialias=True)
        return F.resize(small, [h, w], antialias=True)


class _JpegReencode:
    """Re-save as JPEG at a random quality in [low, high] with Pillow (the scanner's codec)."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def __call__(self, img: Any) -> Any:
        import io

        import numpy as np
        import torch
        from PIL import Image

        quality = int(torch.randint(self.low, self.high + 1, ()))
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as decoded:
            return torch.from_numpy(np.array(decoded.convert("RGB"))).permute(2, 0, 1)
