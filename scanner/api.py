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
and reuse it. Its methods may be called from one thread at a time. It runs the scan's own
local engine (decode threads ahead of inference, DALI where configured), so a detector
and ``aiscan`` give the same rows for the same files.

Paths follow one rule, ``aiscan``'s: a row's ``path`` is absolute (``os.path.abspath`` of
what was given: normalised, symbolic links kept as named), whether the file came from
:meth:`Detector.classify_tree` or :meth:`Detector.classify_files`;
:meth:`Detector.classify_bytes` has no file, and its row's ``path`` is the name given.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .core.decode import Blob
from .core.discovery import Found, discover
from .core.rows import Row
from .engines.local import LocalEngine
from .engines.spec import BatchResult, EngineSpec
from .run.config import DetectorConfig


class Detector:
    """A model, ready to classify images.

    Args:
        model: an aiscan ONNX model, or a shipped one by name: "default" (the CLIP model,
            also when None) or "fast" (the EfficientNet ensemble).
        config: every other setting, as ``aiscan`` takes them (device, decoder, threshold,
            band, batch size, workers, limits, decode timeout, evidence); ``options``
            instead build one: ``Detector("fast", device="cpu", threshold=0.4)``.

    Raises:
        ConfigError, ModelError, DeviceError: as ``aiscan`` would, before any image is read.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        config: DetectorConfig | None = None,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError("give a config or options, not both")
        if config is None:
            config = DetectorConfig(model=model, **options)
        elif model is not None:
            config = dataclasses.replace(config, model=model)
        self.config = config
        self.model = config.open_model()
        self.engine = LocalEngine(EngineSpec(self.model, config.decode_spec))

    @property
    def threshold(self) -> float:
        return self.model.threshold

    @property
    def real_below(self) -> float:
        return self.model.real_below

    @property
    def batch_size(self) -> int:
        return self.model.batch_size

    def classify_files(self, paths: Iterable[str | Path]) -> Iterator[Row]:
        """One row per path, in order, absolute (no folder walk: a folder is an error
        row)."""
        return _rows(self.engine.run(Found(os.path.abspath(p)) for p in paths))

    def classify_tree(self, roots: Iterable[str | Path]) -> Iterator[Row]:
        """One row per file below ``roots`` (folders or files), as ``aiscan`` walks them:
        each file once, in a stable order, absolute paths; no output file, no state."""
        return _rows(self.engine.run(discover(str(r) for r in roots)))

    def classify_bytes(self, images: Iterable[tuple[str, bytes]]) -> Iterator[Row]:
        """One row per ``(name, data)`` pair, in order; ``name`` is the row's ``path``."""
        return _rows(self.engine.run_blobs(Blob(name, data) for name, data in images))


def _rows(results: Iterator[BatchResult]) -> Iterator[Row]:
    for result in results:
        yield from result.rows
