"""The DALI decode path: JPEG decode, resize and normalise as a batch, on the GPU.

The pipeline definition is one small function (:func:`_pipeline`); the device is chosen
in one place (:class:`DaliDecoder`). ``device_id=None`` runs the same graph with DALI's
CPU operators, which is how CI exercises it on machines without a GPU.

DALI cannot skip a bad sample: one corrupt file fails the whole batch. So files are
sniffed and their JPEG headers read first (the CPU decoder with a :class:`DaliClaim`, per
file, in the decode thread pool); only baseline/progressive RGB or greyscale JPEGs within
the pixel limit go to DALI; everything else (PNG with alpha, CMYK, 16-bit, GIF...) takes
the CPU path. When a DALI batch still fails, the pipeline is rebuilt and that batch's
files are decoded one by one on the CPU path, so the bad file gets its error row and the
others their verdicts.

A definition with a canonical step (``Preprocessing.canonical_size``) gets it on DALI
too: a Lanczos shrink to the size Pillow's thumbnail gives, then DALI's
``jpeg_compression_distortion`` at the definition's quality (JPEG encode and decode in
one operator, CPU and GPU backends); not libjpeg's bits, so it is held to the CPU path
by a stated bound (``tests/test_dali.py``).

Parity with the reference preprocessing: DALI's antialiased linear resize against
Pillow's bilinear filter, both from a full decode, differs by about 0.1/255 on average
(``tests/test_dali.py`` states the bound). DALI decodes every pixel whatever the model's
decode mode: for a model trained on draft decoding (all shipped so far) its tensors are
held to the training tensors within a stated bound, and its p_ai to the CPU path's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from aiscan.model.pixels import (
    DecodeLimits,
    canonical_size,
    centre_region,
    check_limits,
    open_image,
    oriented_size,
)
from aiscan.model.preprocessing import Preprocessing

from .decode import Batch, CpuDecoder, Item

log = logging.getLogger(__name__)

#: JPEG colour modes DALI decodes the way the reference does.
_DALI_MODES = ("RGB", "L")


def dali_available() -> bool:
    """True when DALI imports (it does on CPU-only machines too)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _pipeline(spec: Preprocessing, device: str, **pipe_args: Any) -> Any:
    """decode -> resize -> normalise, as one DALI graph fed by name ("encoded")."""
    import nvidia.dali.fn as dali_fn
    import nvidia.dali.types as dali_types
    from nvidia.dali import pipeline_def

    fn: Any = dali_fn  # DALI's own type stubs cover only part of its API
    types: Any = dali_types

    h, w = spec.input_size
    interp = {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC}[spec.interpolation]

    @pipeline_def(**pipe_args)
    def graph() -> Any:
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        # The region the resize policy maps onto the input, relative, (y, x) order.
        roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT, ndim=1)
        roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT, ndim=1)
        images = fn.decoders.image(
            encoded, device=device, output_type=types.RGB, adjust_orientation=True
        )
        if spec.canonical:
            # The canonical copy: shrunk to the size Pillow's thumbnail gives (computed per
            # file, fed in), Lanczos, then JPEG artefacts at the definition's quality.
            canon = fn.external_source(name="canon_size", dtype=types.FLOAT, ndim=1)
            images = fn.resize(
                images, size=canon, interp_type=types.INTERP_LANCZOS3, antialias=True
            )
            images = fn.jpeg_compression_distortion(images, quality=spec.canonical_quality)
        images = fn.resize(
            images,
            size=[h, w],
            roi_start=roi_start,
            roi_end=roi_end,
            roi_relative=True,
            interp_type=interp,
            antialias=True,
        )
        return fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="CHW",
            mean=[255.0 * m for m in spec.mean],
            std=[255.0 * s for s in spec.std],
        )

    pipe = graph()
    pipe.build()
    return pipe


class DaliClaim:
    """Takes the files DALI decodes as the reference does (RGB or greyscale JPEGs within
    the limits, read from the header alone) for the batch stage; the CPU decoder decodes
    the rest right away (:class:`~aiscan.scanner.core.decode.Claim`)."""

    def __init__(self, limits: DecodeLimits | None = None) -> None:
        self.limits = limits or DecodeLimits()

    def __call__(self, item: Item, data: bytes, fmt: str) -> bool:
        if fmt != "JPEG":
            return False
        with open_image(data, ["JPEG"]) as img:
            check_limits(img, self.limits, len(data))
            if img.mode not in _DALI_MODES:
                return False
            item.width, item.height = oriented_size(img)
            item.format = img.format or "JPEG"  # "MPO" as the CPU path says
            item.encoded = data
            return True


def dali_claiming_decoder(
    spec: Preprocessing,
    limits: DecodeLimits | None = None,
    *,
    hash_files: bool = False,
    evidence: bool = True,
    known: Callable[[str], float | None] | None = None,
) -> CpuDecoder:
    """The per-file stage of the DALI path: the CPU decoder, with DALI claiming its files."""
    claim = DaliClaim(limits)
    return CpuDecoder(
        spec, limits, hash_files=hash_files, evidence=evidence, claim=claim, known=known
    )


class DaliDecoder:
    """Batch stage: decode the probed JPEGs of a batch with DALI, in input order.

    Args:
        spec: the model's preprocessing.
        batch_size: the largest batch that will be fed.
        threads: DALI CPU threads.
        device_id: CUDA device, or None for DALI's CPU operators.
    """

    def __init__(
        self,
        spec: Preprocessing,
        batch_size: int,
        threads: int,
        device_id: int | None,
        limits: DecodeLimits | None = None,
    ) -> None:
        self.spec = spec
        self.device_id = device_id
        self._args = {
            "batch_size": batch_size,
            "num_threads": threads,
            "device_id": device_id,
            "exec_async": False,
            "exec_pipelined": False,
            "prefetch_queue_depth": 1,
        }
        self._fallback = CpuDecoder(spec, limits)
        self._lock = threading.Lock()
        self._pipe = self._build()
        self.failed_batches = 0

    @property
    def on_gpu(self) -> bool:
        return self.device_id is not None

    def _build(self) -> Any:
        return _pipeline(self.spec, "mixed" if self.on_gpu else "cpu", **self._args)

    def _roi(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        """The resize region of ``item`` (size after EXIF orientation, from the probe),
        relative to the image, in DALI's (y, x) order: the CPU path's region exactly
        (of the canonical copy, where the definition has that step)."""
        w, h = canonical_size((item.width or 1, item.height or 1), self.spec)
        left, top, right, bottom = centre_region((w, h), self.spec)
        return (
            np.array([top / h, left / w], np.float32),
            np.array([bottom / h, right / w], np.float32),
        )

    def _canon(self, item: Item) -> np.ndarray:
        """The canonical copy's (height, width) for ``item``, in DALI's order."""
        w, h = canonical_size((item.width or 1, item.height or 1), self.spec)
        return np.array([h, w], np.float32)

    def __call__(self, items: list[Item]) -> Batch:
        batch = Batch(items)
        at = [i for i, it in enumerate(items) if it.encoded is not None]
        todo = [items[i] for i in at]
        if not todo:
            return batch
        with self._lock:
            try:
                self._pipe.feed_input(
                    "encoded", [np.frombuffer(it.encoded or b"", np.uint8) for it in todo]
                )
                starts, ends = zip(*(self._roi(it) for it in todo), strict=True)
                self._pipe.feed_input("roi_start", list(starts))
                self._pipe.feed_input("roi_end", list(ends))
                if self.spec.canonical:
                    self._pipe.feed_input("canon_size", [self._canon(it) for it in todo])
                (out,) = self._pipe.run()
                if self.on_gpu:
                    # Stays on the GPU: the classifier binds its memory (IO binding).
                    batch.device, batch.on_device = out.as_tensor(), at
                else:
                    for it, tensor in zip(todo, out.as_array(), strict=True):
                        it.tensor = tensor
            except RuntimeError as exc:
                self.failed_batches += 1
                log.info(
                    "DALI failed on a batch (%s); decoding it file by file on the CPU",
                    str(exc).splitlines()[0],
                )
                self._pipe = self._build()
                for it in todo:
                    self._fallback.decode_bytes(it, it.encoded or b"")
        for it in todo:
            it.encoded = None
        return batch
