"""Classify images from Python, without an output file: a folder tree, a list of files, or
images already in memory (an upload service's bytes).

::

    from aiscan.scanner.api import Detector

    detector = Detector()  # the embedded default model, on the best device available
    for row in detector.classify_files(["a.jpg", "b.png"]):
        print(row.path, row.status, row.p_ai, row.verdict, row.error)
    for row in detector.classify_bytes([("upload-17.jpg", data)]):
        ...

Rows come back in input order, one per input, with the scanner's own decoding, limits,
error contract (a bad file is a row with a status and an error, never an exception) and
full-precision ``p_ai``. A :class:`Detector` holds one ONNX Runtime session; build it once
and reuse it. Its methods may be called from one thread at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from aiscan.model.pixels import DecodeLimits

from .core.classify import RowMaker, classify_batch
from .core.decode import Blob, Item
from .core.discovery import Found, discover
from .core.errors import ConfigError
from .core.infer import Classifier, default_batch_size, default_threads
from .core.models import resolve_model
from .core.rows import Row
from .engines.local import N, collect_batch, decode_stages, submit_ahead
from .engines.pool import DaemonPool
from .run.config import DECODERS


class Detector:
    """A model, ready to classify images.

    Args:
        model: an aiscan ONNX model, or a shipped one by name: "default" (the CLIP model,
            also when None) or "fast" (the EfficientNet ensemble).
        device: "auto", "cpu", "cuda" or "tensorrt", as ``aiscan --device``.
        threshold: p_ai at or above which the verdict is "ai" (default: the model's own).
        real_below: p_ai below which the verdict is "real"; between the two "uncertain"
            (default: the model's own band; none for a model without one).
        batch_size: images per inference call (default: 8 on a CPU, 128 on a GPU).
        workers: decode threads (default: the cores this process may use).
        limits: pixel, file size and decode memory limits.
        decode_timeout: seconds one image may take to decode before it becomes an error row.
        evidence: read provenance metadata (C2PA, generator tags, camera EXIF).
        decoder: "auto" (DALI on a GPU when both are there), "cpu" or "dali", as
            ``aiscan --decoder``.

    Raises:
        ConfigError, ModelError, DeviceError: as ``aiscan`` would, before any image is read.
        ValueError: a threshold outside [0, 1].
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        threshold: float | None = None,
        real_below: float | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        limits: DecodeLimits | None = None,
        decode_timeout: float = 60.0,
        evidence: bool = True,
        decoder: str = "auto",
    ) -> None:
        self.classifier = Classifier(
            resolve_model(model, device), device, threads=default_threads()
        )
        info = self.classifier.info
        self.threshold = info.threshold if threshold is None else threshold
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {self.threshold}")
        below = info.real_below if real_below is None else real_below
        if below is not None and not 0.0 <= below <= 1.0:
            raise ValueError(f"real_below must be within [0, 1], got {below}")
        self.real_below = self.threshold if below is None else min(below, self.threshold)
        provider = self.classifier.report.providers[0]
        self.batch_size = batch_size or default_batch_size(provider)
        self.workers = workers or default_threads()
        self.decode_timeout = decode_timeout
        if decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        self._stages = decode_stages(
            info.preprocessing,
            limits or DecodeLimits(),
            batch_size=self.batch_size,
            workers=self.workers,
            decoder=decoder,
            evidence=evidence,
        )
        self._rows = RowMaker(
            self.classifier.model_label, self.threshold, real_below=self.real_below
        )

    def classify_files(self, paths: Iterable[str | Path]) -> Iterator[Row]:
        """One row per path, in order (no folder walk: a folder is an error row)."""
        found = (Found(str(p)) for p in paths)
        return self._run(found, self._stages.per_file)

    def classify_tree(self, roots: Iterable[str | Path]) -> Iterator[Row]:
        """One row per file below ``roots`` (folders or files), as ``aiscan`` walks them:
        each file once, in a stable order, absolute paths; no output file, no state."""
        return self._run(discover(str(r) for r in roots), self._stages.per_file)

    def classify_bytes(self, images: Iterable[tuple[str, bytes]]) -> Iterator[Row]:
        """One row per ``(name, data)`` pair, in order; ``name`` is the row's ``path``."""
        blobs = (Blob(name, data) for name, data in images)
        return self._run(blobs, self._stages.per_file.decode_blob)

    def _run(self, inputs: Iterable[N], decode: Callable[[N], Item]) -> Iterator[Row]:
        pool = DaemonPool(self.workers, "aiscan-api")
        try:
            for tasks in submit_ahead(pool, decode, inputs, self.batch_size, prefetch=1):
                items = collect_batch(pool, tasks, self.decode_timeout)
                batch = self._stages.per_batch(items)
                yield from classify_batch(batch, self.classifier, self._rows)
        finally:
            pool.shutdown(wait_s=2.0)
