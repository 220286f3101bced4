"""Timed runners: each takes a list of files (or a folder) and returns seconds.

Every runner is called once on a small warm-up set (decoders, thread pools, ONNX Runtime
sessions and the page cache all warm up), then timed ``repeats`` times on the full set.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from aiscan.scanner.preprocess import INTERPOLATIONS, Preprocessing, normalize_batch


@dataclass(frozen=True)
class Timing:
    """Repeated timings of one runner on one input set."""

    runner: str
    corpus: str
    images: int
    seconds: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.images / self.median_s

    @property
    def spread(self) -> float:
        """(max - min) / median of the timings: how noisy the machine was."""
        return (max(self.seconds) - min(self.seconds)) / self.median_s

    def as_dict(self) -> dict[str, object]:
        return {
            "runner": self.runner,
            "corpus": self.corpus,
            "images": self.images,
            "seconds": [round(s, 4) for s in self.seconds],
            "median_s": round(self.median_s, 4),
            "images_per_s": round(self.images_per_s, 2),
            "spread": round(self.spread, 3),
        }


def timed(
    name: str,
    corpus: str,
    run: Callable[[Sequence[Path]], object],
    files: Sequence[Path],
    *,
    repeats: int,
    warmup: int = 4,
) -> Timing:
    """Warm ``run`` up on a few files (not timed), then time it ``repeats`` times."""
    run(files[:warmup])
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(files)
        seconds.append(time.perf_counter() - t0)
    return Timing(name, corpus, len(files), seconds)


def _session(model: Path, threads: int = 0):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def naive_ort(model: Path, spec: Preprocessing) -> Callable[[Sequence[Path]], None]:
    """The way a user would first write it: one image at a time, full PIL decode,
    resize, normalise, one ONNX Runtime call per image (default session settings)."""
    session = _session(model)
    name = session.get_inputs()[0].name
    h, w = spec.input_size
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)

    def run(files: Sequence[Path]) -> None:
        for f in files:
            img = Image.open(f).convert("RGB").resize((w, h), INTERPOLATIONS[spec.interpolation])
            x = (np.asarray(img, np.float32) / 255.0 - mean) / std
            session.run(None, {name: x.transpose(2, 0, 1)[None]})

    return run


def aiscan_scan(
    model: Path, *, batch_size: int | None, workers: int
) -> Callable[[Sequence[Path]], None]:
    """The full scanner (discovery, decode, inference, CSV) on the given files."""
    from aiscan.scanner.config import ScanConfig
    from aiscan.scanner.pipeline import scan

    out_dir = Path(tempfile.mkdtemp(prefix="aiscan-bench-"))

    def run(files: Sequence[Path]) -> None:
        config = ScanConfig(
            paths=tuple(str(f) for f in files),
            out=out_dir / "v.csv",
            model=model,
            overwrite=True,
            batch_size=batch_size,
            workers=workers,
        )
        scan(config)

    return run


def decode_only(
    spec: Preprocessing, workers: int, *, fast: bool = True
) -> Callable[[Sequence[Path]], None]:
    """aiscan's decode stage alone, on its thread pool (``fast=False``: reference decode)."""
    from aiscan.scanner.decode import CpuDecoder
    from aiscan.scanner.discover import Found

    decoder = CpuDecoder(spec, fast=fast)

    def run(files: Sequence[Path]) -> None:
        with ThreadPoolExecutor(workers) as pool:
            for item in pool.map(decoder, (Found(str(f)) for f in files)):
                if item.status != "ok":
                    raise RuntimeError(f"{item.path}: {item.error}")

    return run


def inference_only(
    model: Path, spec: Preprocessing, batch: int, threads: int = 0
) -> Callable[[Sequence[Path]], None]:
    """The model alone on synthetic input, in batches (the files only set the count)."""
    from aiscan.scanner.infer import Classifier

    clf = Classifier(model, "cpu", threads=threads)
    h, w = spec.input_size
    rng = np.random.default_rng(0)
    tensor = normalize_batch(
        [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)], spec
    )

    def run(files: Sequence[Path]) -> None:
        for start in range(0, len(files), batch):
            clf.predict(tensor[: min(batch, len(files) - start)])

    return run


def machine() -> dict[str, object]:
    """What this ran on."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
