"""One scan: discover -> resume filter -> decode (threads) -> infer -> write.

Decoding runs ``prefetch`` batches ahead of inference in a thread pool (Pillow and ONNX
Runtime release the GIL while they work), through a bounded window of futures, so memory
stays flat whatever the size of the tree.
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.scanner import __version__
from aiscan.scanner.config import ScanConfig, resolve_model
from aiscan.scanner.decode import CpuDecoder, Item
from aiscan.scanner.discover import Found, discover, in_shard
from aiscan.scanner.infer import Classifier, default_batch_size
from aiscan.scanner.output import Row, VerdictWriter
from aiscan.scanner.preprocess import DecodeLimits, normalize_batch


@dataclass
class Progress:
    """A snapshot for progress displays.

    Attributes:
        done: files given a row in this run.
        total: files this run will cover, once the background count has finished.
        ok_images: images classified in this run.
        statuses: rows per status in this run.
        elapsed_s: seconds since the first file was submitted.
    """

    done: int = 0
    total: int | None = None
    ok_images: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0


@dataclass
class ScanSummary:
    """What a scan did; also written as JSON next to the output."""

    out: str
    format: str
    model_id: str
    model_sha256: str
    model_trained: bool
    providers: list[str]
    provider_note: str
    threshold: float
    batch_size: int
    statuses: dict[str, int]
    verdicts: dict[str, int]
    files_this_run: int
    files_resumed: int
    elapsed_s: float
    images_per_s: float
    interrupted: bool
    started: str
    finished: str
    config: dict[str, Any]
    versions: dict[str, str]
    warnings: list[str]

    @property
    def errors(self) -> int:
        return self.statuses.get("error", 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _versions() -> dict[str, str]:
    import onnxruntime
    import PIL

    return {
        "aiscan": __version__,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def _submit_ahead(
    pool: ThreadPoolExecutor,
    decode: Callable[[Found], Item],
    found: Iterable[Found],
    batch_size: int,
    prefetch: int,
) -> Iterator[list[Future[Item]]]:
    """Yield batches of decode futures, keeping ``prefetch`` more batches in flight."""
    window: deque[Future[Item]] = deque()
    source = iter(found)
    limit = batch_size * (prefetch + 1)
    exhausted = False
    while True:
        while not exhausted and len(window) < limit:
            nxt = next(source, None)
            if nxt is None:
                exhausted = True
            else:
                window.append(pool.submit(decode, nxt))
        if not window:
            return
        yield [window.popleft() for _ in range(min(batch_size, len(window)))]


class _Counter(threading.Thread):
    """Counts the files this run will cover, in the background, for progress and ETA."""

    def __init__(self, files: Callable[[], Iterable[Found]]) -> None:
        super().__init__(name="aiscan-count", daemon=True)
        self._files = files
        self.total: int | None = None
        self._stop = threading.Event()

    def run(self) -> None:
        n = 0
        for _ in self._files():
            if self._stop.is_set():
                return
            n += 1
        self.total = n

    def stop(self) -> None:
        self._stop.set()


class _Rows:
    """Turns decoded items and probabilities into verdict rows."""

    def __init__(self, model: str, threshold: float) -> None:
        self.model = model
        self.threshold = threshold

    def __call__(self, item: Item, p_ai: float | None = None, error: str = "") -> Row:
        status, err = item.status, item.error
        if status == "ok" and (error or p_ai is None or not math.isfinite(p_ai)):
            status, err = "error", error or f"model returned a non-finite score ({p_ai})"
            p_ai = None
        verdict = "" if p_ai is None else ("ai" if p_ai >= self.threshold else "real")
        return Row(
            item.path,
            status,
            p_ai if status == "ok" else None,
            verdict,
            err,
            item.format,
            item.width,
            item.height,
            item.bytes,
            item.sha256,
            self.model,
        )


def _classify(batch: list[Item], classifier: Classifier, make_row: _Rows) -> list[Row]:
    ready = [it for it in batch if it.status == "ok" and it.pixels is not None]
    scores: dict[int, float] = {}
    failure = ""
    if ready:
        try:
            tensor = normalize_batch(
                [it.pixels for it in ready if it.pixels is not None], classifier.info.preprocessing
            )
            probs = classifier.predict(tensor)
            scores = {id(it): float(p) for it, p in zip(ready, probs, strict=True)}
        except Exception as exc:  # the runtime's own errors: the batch's rows say so
            failure = f"inference failed: {type(exc).__name__}: {exc}"
    ready_ids = {id(it) for it in ready}
    rows = [
        make_row(it, scores.get(id(it)), failure if id(it) in ready_ids else "") for it in batch
    ]
    for it in batch:
        it.pixels = None  # free the batch's memory as soon as it is written
    return rows


def scan(config: ScanConfig, on_progress: Callable[[Progress], None] | None = None) -> ScanSummary:
    """Run one scan as configured; return its summary (also written next to the output).

    Raises:
        ConfigError, ModelError, DeviceError, OutputExistsError: before any file is touched.
    """
    started = datetime.now(timezone.utc)
    model_path = resolve_model(config.model)
    threads = config.threads or os.cpu_count() or 1
    classifier = Classifier(model_path, config.device, threads=threads)
    info = classifier.info
    threshold = info.threshold if config.threshold is None else config.threshold
    batch_size = config.batch_size or default_batch_size(classifier.report.providers[0])
    writer = VerdictWriter(config.out, config.fmt, resume=config.resume, overwrite=config.overwrite)
    done = writer.recovered.paths
    shard_i, shard_n = config.shard_index_count

    def todo() -> Iterator[Found]:
        return (
            f
            for f in discover(config.paths)
            if in_shard(f.path, shard_i, shard_n) and f.path not in done
        )

    decoder = CpuDecoder(
        info.preprocessing,
        DecodeLimits(config.max_pixels),
        hash_files=config.hash_files,
        fast=not config.exact_decode,
    )
    make_row = _Rows(classifier.model_label, threshold)
    progress = Progress()
    counter = _Counter(todo)
    counter.start()
    verdicts: Counter[str] = Counter(writer.recovered.verdicts)
    t0 = time.perf_counter()
    interrupted = False
    pool = ThreadPoolExecutor(config.workers, thread_name_prefix="aiscan-decode")
    try:
        for futures in _submit_ahead(pool, decoder, todo(), batch_size, config.prefetch):
            rows = _classify([f.result() for f in futures], classifier, make_row)
            writer.write(rows)
            progress.done += len(rows)
            progress.statuses.update(r.status for r in rows)
            verdicts.update(r.verdict for r in rows if r.verdict)
            progress.ok_images = progress.statuses["ok"]
            progress.total = counter.total
            progress.elapsed_s = time.perf_counter() - t0
            if on_progress:
                on_progress(progress)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        counter.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
    if not interrupted:
        writer.finish()
    elapsed = time.perf_counter() - t0
    statuses = Counter(writer.recovered.statuses) + progress.statuses
    warnings = []
    if not info.trained:
        warnings.append(
            f"model {info.model_id} was exported with untrained weights: "
            "its verdicts are meaningless (benchmark/test model)"
        )
    summary = ScanSummary(
        out=str(config.out),
        format=config.fmt,
        model_id=info.model_id,
        model_sha256=classifier.sha256,
        model_trained=info.trained,
        providers=list(classifier.report.providers),
        provider_note=classifier.report.note,
        threshold=threshold,
        batch_size=batch_size,
        statuses={s: statuses.get(s, 0) for s in ("ok", "skipped", "error")},
        verdicts=dict(verdicts),
        files_this_run=progress.done,
        files_resumed=len(done),
        elapsed_s=round(elapsed, 3),
        images_per_s=round(progress.ok_images / elapsed, 2) if elapsed > 0 else 0.0,
        interrupted=interrupted,
        started=started.isoformat(timespec="seconds"),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        versions=_versions(),
        warnings=warnings,
    )
    _write_atomic(config.summary_path, summary.to_json() + "\n")
    return summary


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
