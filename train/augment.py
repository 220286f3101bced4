"""Training augmentations: the report's recipe, plus optional anti-shortcut transforms."""

from __future__ import annotations

import math
import random
from typing import Any

from aiscan.model.errors import UsageError
from aiscan.model.pixels import Box, centre_region
from aiscan.model.preprocessing import Preprocessing


class RandomRegion:
    """Training counterpart of :func:`aiscan.model.pixels.centre_region`.

    For the "crop" policy: a region of the model input's aspect, of side ``s`` times the
    largest that fits (``s`` uniform in [``scale_min``, 1]), at a uniformly random place;
    the scanner takes the centred one with ``s`` = 1. For "squash": the whole image, as
    the scanner does. A class, not a closure, so DataLoader workers can pickle it; it
    draws from :mod:`random`, which PyTorch seeds in every worker.
    """

    def __init__(self, scale_min: float = 1.0) -> None:
        if not 0.1 <= scale_min <= 1.0:
            raise UsageError(f"crop scale_min must be within [0.1, 1], got {scale_min}")
        self.scale_min = scale_min

    def __call__(self, size: tuple[int, int], spec: Preprocessing) -> Box:
        left, top, right, bottom = centre_region(size, spec)
        if spec.resize == "squash":
            return (left, top, right, bottom)
        s = random.uniform(self.scale_min, 1.0)
        cw, ch = (right - left) * s, (bottom - top) * s
        x, y = random.uniform(0, size[0] - cw), random.uniform(0, size[1] - ch)
        return (x, y, x + cw, y + ch)


def report_augmentations(anti_shortcut: float = 0.0, degrade: float = 0.0) -> Any:
    """The report's train transforms on a uint8 CHW tensor already resized by the scanner.

    Horizontal flip, rotation up to 10 degrees, colour jitter 0.2/0.2/0.2, translation up
    to 5%. With ``anti_shortcut`` > 0, that fraction of images (of both classes) is first
    shrunk by a random factor and scaled back up, and, independently, re-encoded as JPEG
    at a random quality, so that compression and resolution stop telling classes apart.
    With ``degrade`` > 0, Wang et al. 2020's "blur+JPEG (p)": with probability p a Gaussian
    blur of sigma uniform in [0, 3], then, independently with probability p, a JPEG
    re-encode at quality uniform in [30, 100].
    """
    from torchvision.transforms import v2

    steps: list[Any] = []
    if anti_shortcut > 0:
        steps += [
            v2.RandomApply([_DownUp(0.4, 0.9)], p=anti_shortcut),
            v2.RandomApply([_JpegReencode(30, 95)], p=anti_shortcut),
        ]
    if degrade > 0:
        steps += [
            v2.RandomApply([_GaussianBlur(0.0, 3.0)], p=degrade),
            v2.RandomApply([_JpegReencode(30, 100)], p=degrade),
        ]
    steps += [
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(10),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        v2.RandomAffine(degrees=0, translate=(0.05, 0.05)),
    ]
    return v2.Compose(steps)


class _GaussianBlur:
    """Gaussian blur with sigma uniform in [low, high] (kernel covering 3 sigma)."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, img: Any) -> Any:
        from torchvision.transforms.v2 import functional as F  # noqa: N812

        sigma = random.uniform(self.low, self.high)
        if sigma < 0.1:
            return img
        kernel = 2 * math.ceil(3 * sigma) + 1
        return F.gaussian_blur(img, [kernel, kernel], [sigma, sigma])


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
