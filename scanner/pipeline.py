"""One scan: discover -> resume filter -> decode (threads) -> infer -> write.

Decoding runs ``prefetch`` batches ahead of inference in a thread pool (Pillow and ONNX
Runtime release the GIL while they work), through a bounded window of tasks, so memory
stays flat whatever the size of the tree. A file that takes longer than
``--decode-timeout`` to decode becomes an error row and its thread is replaced; stopping
never waits on such a file (:mod:`aiscan.scanner.pool`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from aiscan.model.meta import verdict as verdict_of
from aiscan.model.preprocessing import Preprocessing
from aiscan.scanner import __version__
from aiscan.scanner.config import ConfigError, ScanConfig, resolve_model
from aiscan.scanner.dali import DaliDecoder, dali_available, dali_probe
from aiscan.scanner.decode import Batch, CpuDecoder, Item
from aiscan.scanner.discover import Found, discover, in_shard
from aiscan.scanner.infer import Classifier, cuda_device_count, default_batch_size
from aiscan.scanner.output import Row, VerdictWriter, iter_rows
from aiscan.scanner.pool import DaemonPool, Task
from aiscan.scanner.preprocess import DecodeLimits, normalize_batch
from aiscan.scanner.state import DRIFT_BOUNDS, ScanState


@dataclass
class Progress:
    """A snapshot for progress displays.

    Attributes:
        done: files given a row in this run.
        total: files this run will cover, once the walk of the tree has finished.
        found: files the walk has found so far (``total`` once it has finished).
        reused: files whose verdict came from the state database (identical content).
        ok_images: images classified in this run.
        statuses: rows per status in this run.
        elapsed_s: seconds since the first file was submitted.
    """

    done: int = 0
    total: int | None = None
    found: int = 0
    reused: int = 0
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
    decoder: str
    dali_failed_batches: int
    threshold: float
    real_below: float
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
    state: dict[str, Any] | None = None

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


class Named(Protocol):
    """An input of the decode stage: a discovered file, or an image in memory."""

    @property
    def path(self) -> str: ...


N = TypeVar("N", bound=Named)


def submit_ahead(
    pool: DaemonPool,
    decode: Callable[[N], Item],
    found: Iterable[N],
    batch_size: int,
    prefetch: int,
) -> Iterator[list[tuple[N, Task[Item]]]]:
    """Yield batches of decode tasks, keeping ``prefetch`` more batches in flight."""
    window: deque[tuple[N, Task[Item]]] = deque()
    source = iter(found)
    limit = batch_size * (prefetch + 1)
    exhausted = False
    while True:
        while not exhausted and len(window) < limit:
            nxt = next(source, None)
            if nxt is None:
                exhausted = True
            else:
                window.append((nxt, pool.submit(decode, nxt)))
        if not window:
            return
        yield [window.popleft() for _ in range(min(batch_size, len(window)))]


def _timed_out(path: str, timeout_s: float) -> Item:
    return Item(
        path,
        status="error",
        error=f"decoding took longer than {timeout_s:g} s (see --decode-timeout); abandoned",
    )


def collect_batch(
    pool: DaemonPool, tasks: Sequence[tuple[Named, Task[Item]]], timeout_s: float
) -> list[Item]:
    """The decoded items of a batch, in order; a file past its time is an error row."""
    return [pool.result(t, timeout_s, partial(_timed_out, f.path, timeout_s)) for f, t in tasks]


_END = object()


class Walk(threading.Thread):
    """Walks the files of a scan once, ahead of it, in a background thread.

    The files go into a bounded queue (``ahead`` of them at most, so memory stays flat
    on any tree) and come out, in the walk's order, by iterating; ``found`` counts them
    as they are found and ``total`` is set when the walk ends, which on a tree of up to
    ``ahead`` files is almost at once: that is the progress bar's total and ETA, without
    walking the tree a second time. An exception of the walk (a state database error)
    is raised by the iteration.
    """

    def __init__(self, files: Iterable[Found], ahead: int = 100_000) -> None:
        super().__init__(name="aiscan-walk", daemon=True)
        self._files = files
        self._queue: queue.Queue[Any] = queue.Queue(ahead)
        self._halt = threading.Event()
        self._error: BaseException | None = None
        self.found = 0
        self.total: int | None = None

    def run(self) -> None:
        try:
            for f in self._files:
                if not self._put(f):
                    return
                self.found += 1
            self.total = self.found
        except BaseException as exc:  # handed to the consumer, raised there
            self._error = exc
        self._put(_END)

    def _put(self, value: object) -> bool:
        while not self._halt.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Found]:
        while (f := self._queue.get()) is not _END:
            yield f
        if self._error is not None:
            raise self._error

    def stop(self, wait_s: float = 5.0) -> None:
        """Stop walking and wait (at most ``wait_s``) for the thread to end: it may be
        reading the state database, which the caller is about to close."""
        self._halt.set()
        if self.is_alive():
            self.join(wait_s)


class RowMaker:
    """Turns decoded items and probabilities into verdict rows.

    With the "override" evidence policy, a file whose metadata declares it AI-made
    (``evidence == "ai-declared"``) gets the verdict "ai" whatever its p_ai; p_ai itself
    is always the model's.
    """

    def __init__(
        self,
        model: str,
        threshold: float,
        evidence_policy: str = "report",
        real_below: float | None = None,
    ) -> None:
        self.model = model
        self.threshold = threshold
        self.real_below = threshold if real_below is None else min(real_below, threshold)
        self.override = evidence_policy == "override"

    def __call__(self, item: Item, p_ai: float | None = None, error: str = "") -> Row:
        status, err = item.status, item.error
        if status == "ok" and (error or p_ai is None or not math.isfinite(p_ai)):
            status, err = "error", error or f"model returned a non-finite score ({p_ai})"
            p_ai = None
        verdict = "" if p_ai is None else verdict_of(p_ai, self.threshold, self.real_below)
        if verdict and self.override and item.evidence.kind == "ai-declared":
            verdict = "ai"
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
            item.evidence.kind,
            item.evidence.detail,
            item.evidence.generator,
        )


def _host_tensor(items: list[Item], spec: Preprocessing) -> np.ndarray:
    """One input batch for items on the host: tensors a batch decoder made, or pixels
    normalised here."""
    pixels = [it.pixels for it in items if it.tensor is None and it.pixels is not None]
    if len(pixels) == len(items):
        return normalize_batch(pixels, spec)
    normed = iter(normalize_batch(pixels, spec)) if pixels else iter(())
    return np.stack([it.tensor if it.tensor is not None else next(normed) for it in items])


def classify_batch(batch: Batch, classifier: Classifier, make_row: RowMaker) -> list[Row]:
    """Run the model on every ready item of a batch; one row per item, in order."""
    items, on_device = batch.items, set(batch.on_device)
    host = [
        i
        for i, it in enumerate(items)
        if it.status == "ok"
        and i not in on_device
        and (it.tensor is not None or it.pixels is not None)
    ]
    scores: dict[int, float] = {
        i: it.reused_p_ai for i, it in enumerate(items) if it.reused_p_ai is not None
    }
    failure = ""
    try:
        if host:
            inputs = _host_tensor([items[i] for i in host], classifier.info.preprocessing)
            scores.update(zip(host, map(float, classifier.predict(inputs)), strict=True))
        if batch.on_device:
            probs = classifier.predict_device(batch.device)
            scores.update(zip(batch.on_device, map(float, probs), strict=True))
    except Exception as exc:  # the runtime's own errors: the batch's rows say so
        failure = f"inference failed: {type(exc).__name__}: {exc}"
    ready = set(host) | on_device | set(scores)
    rows = [
        make_row(it, scores.get(i), failure if i in ready else "") for i, it in enumerate(items)
    ]
    for it in items:
        it.pixels = it.tensor = None  # free the batch's memory as soon as it is written
    batch.device = None
    return rows


@dataclass(frozen=True)
class Stages:
    """The decode stages chosen for a scan: per file (thread pool), then per batch.

    Attributes:
        name: "cpu", "dali-gpu" or "dali-cpu", as the summary reports it.
        per_file: the CPU decoder (on the DALI path, with DALI claiming its JPEGs).
        per_batch: makes a :class:`Batch` of decoded items (DALI decodes its share here).
        failed_batches: batches DALI could not decode (decoded file by file instead).
    """

    name: str
    per_file: CpuDecoder
    per_batch: Callable[[list[Item]], Batch]
    failed_batches: Callable[[], int]


def decode_stages(
    spec: Preprocessing,
    limits: DecodeLimits,
    *,
    batch_size: int,
    workers: int,
    decoder: str = "auto",
    decode: str | None = None,
    hash_files: bool = False,
    evidence: bool = True,
) -> Stages:
    """The decode stages for ``decoder`` ("auto": DALI on a GPU when both are there, else
    the CPU path); ``decode`` forces a decode mode on the model's own ("full": the CPU
    reference path, never DALI).

    Raises:
        ConfigError: DALI was asked for and is not installed.
    """
    use_dali = decoder == "dali" or (
        decoder == "auto" and cuda_device_count() > 0 and dali_available()
    )
    if not use_dali or decode == "full":
        cpu = CpuDecoder(spec, limits, hash_files=hash_files, decode=decode, evidence=evidence)
        return Stages("cpu", cpu, Batch, lambda: 0)
    if not dali_available():
        raise ConfigError("--decoder dali needs NVIDIA DALI: pip install 'aiscan[dali]'")
    device_id = 0 if cuda_device_count() > 0 else None
    dali = DaliDecoder(spec, batch_size, workers, device_id, limits)
    return Stages(
        "dali-gpu" if dali.on_gpu else "dali-cpu",
        dali_probe(spec, limits, hash_files=hash_files, evidence=evidence),
        dali,
        lambda: dali.failed_batches,
    )


def _stages(config: ScanConfig, classifier: Classifier, batch_size: int) -> Stages:
    return decode_stages(
        classifier.info.preprocessing,
        config.limits,
        batch_size=batch_size,
        workers=config.workers,
        # the Ray engine decodes on its workers' CPUs
        decoder=config.decoder if config.engine == "local" else "cpu",
        decode=config.decode_override,
        hash_files=config.hash_files,
        evidence=config.evidence,
    )


def _batches(
    config: ScanConfig,
    stages: Stages,
    files: Iterable[Found],
    batch_size: int,
    decode_pool: DaemonPool,
    batch_pool: DaemonPool,
) -> Iterator[Batch]:
    """Decoded batches in order; the batch stage of batch N+1 runs while N is classified."""

    def batch_stage(tasks: list[tuple[Found, Task[Item]]]) -> Batch:
        return stages.per_batch(collect_batch(decode_pool, tasks, config.decode_timeout))

    pending: deque[Task[Batch]] = deque()
    for tasks in submit_ahead(decode_pool, stages.per_file, files, batch_size, config.prefetch):
        pending.append(batch_pool.submit(batch_stage, tasks))
        if len(pending) > 1:
            yield pending.popleft().future.result()
    while pending:
        yield pending.popleft().future.result()


class Verdicts:
    """The verdicts of a scan, without an output file: walk, decode, classify, in the order
    of the walk; each file once, each batch of rows as soon as it is classified.

    ``aiscan`` is this plus a writer (:func:`scan`); a library user iterates it (or
    :func:`iter_verdicts`) directly. It honours the configuration's model, device,
    decoder, limits, shard and engine; output, resume and state options are
    :func:`scan`'s. Iterate it once.

    Args:
        config: the scan.
        keep: called once per file found (in the walk's thread); a file it returns
            False for is left out (how :func:`scan` skips rows written before, or files
            the state database has seen unchanged).

    Raises:
        ConfigError, ModelError, DeviceError: before any file is touched.
    """

    def __init__(self, config: ScanConfig, keep: Callable[[Found], bool] | None = None) -> None:
        self.config = config
        self.keep = keep
        threads = config.threads or os.cpu_count() or 1
        self.classifier = Classifier(
            resolve_model(config.model, config.device), config.device, threads=threads
        )
        info = self.classifier.info
        self.threshold = info.threshold if config.threshold is None else config.threshold
        below = info.real_below if config.real_below is None else config.real_below
        self.real_below = self.threshold if below is None else min(below, self.threshold)
        self.batch_size = config.batch_size or default_batch_size(
            self.classifier.report.providers[0]
        )
        self.stages = _stages(config, self.classifier, self.batch_size)
        self.make_row = RowMaker(
            self.classifier.model_label, self.threshold, config.evidence_policy, self.real_below
        )
        self.progress = Progress()

    def _files(self) -> Iterator[Found]:
        shard_i, shard_n = self.config.shard_index_count
        for f in discover(self.config.paths, exclude=self.config.own_files):
            if in_shard(f.path, shard_i, shard_n) and (self.keep is None or self.keep(f)):
                yield f

    def batches(self) -> Generator[list[Row], None, None]:
        """Rows batch by batch, in the walk's order; ``progress`` is current at each."""
        config, progress = self.config, self.progress
        walk = Walk(self._files())
        walk.start()
        t0 = time.perf_counter()
        if config.engine == "ray":
            from aiscan.scanner.ray_engine import ray_rows

            source = ray_rows(config, walk, self.classifier, self.make_row, self.batch_size)
        else:
            source = _local_rows(
                config, self.stages, walk, self.classifier, self.make_row, self.batch_size
            )
        try:
            for rows, reused in source:
                progress.done += len(rows)
                progress.reused += reused
                progress.statuses.update(r.status for r in rows)
                progress.ok_images = progress.statuses["ok"]
                progress.found, progress.total = walk.found, walk.total
                progress.elapsed_s = time.perf_counter() - t0
                yield rows
        finally:
            walk.stop()
            source.close()  # stops the engine: its pools, or its Ray dataset
            progress.elapsed_s = time.perf_counter() - t0

    def __iter__(self) -> Iterator[Row]:
        for rows in self.batches():
            yield from rows


def iter_verdicts(config: ScanConfig) -> Iterator[Row]:
    """Every row of a scan as configured, in order, without an output file (see
    :class:`Verdicts`; this is ``iter(Verdicts(config))``)."""
    return iter(Verdicts(config))


def scan(config: ScanConfig, on_progress: Callable[[Progress], None] | None = None) -> ScanSummary:
    """Run one scan as configured: :class:`Verdicts` into a writer, with resume and the
    state database; return its summary (also written next to the output).

    Raises:
        ConfigError, ModelError, DeviceError, OutputExistsError, OutputLockedError,
        StateError: before any file is touched.
    """
    started = datetime.now(timezone.utc)
    out = config.out_file
    verdicts = Verdicts(config)
    classifier = verdicts.classifier
    state = None
    if config.state is not None:
        state = ScanState(
            config.state,
            classifier.sha256,
            verdicts.threshold,
            content=config.hash_files,
            real_below=verdicts.real_below,
        )
    try:
        writer = VerdictWriter(
            out,
            config.fmt,
            # with a state, rerunning the same command continues tonight's output
            resume=config.resume or (state is not None and not config.overwrite),
            overwrite=config.overwrite,
        )
    except BaseException:
        if state is not None:
            state.close()
        raise
    state_stats = None
    try:
        if state is not None:
            _start_state(state, config, writer, verdicts.stages)
        done = writer.recovered.paths
        verdicts.keep = lambda f: f.path not in done and (state is None or state.needs_scan(f))
        counts, interrupted = _write(verdicts, writer, state, on_progress)
        if not interrupted:
            writer.finish()
            if state is not None:
                state_stats = asdict(state.finish(config.shard_index_count))
    finally:
        writer.close()  # no-op after finish; otherwise keeps the journal, drops the lock
        if state is not None:
            state.close()
    summary = _summary(
        config,
        verdicts,
        writer,
        _Outcome(verdicts.progress, counts, interrupted, state_stats),
        started=started,
    )
    _write_atomic(config.summary_path, summary.to_json() + "\n")
    return summary


def _write(
    verdicts: Verdicts,
    writer: VerdictWriter,
    state: ScanState | None,
    on_progress: Callable[[Progress], None] | None,
) -> tuple[Counter[str], bool]:
    """The scan loop: (verdict counts, whether it was interrupted)."""
    counts: Counter[str] = Counter(writer.recovered.verdicts)
    progress, reused = verdicts.progress, 0
    batches = verdicts.batches()
    try:
        for rows in batches:
            writer.write(rows)
            if state is not None:  # after the journal: a crash between is mended on rerun
                state.record(rows, reused=progress.reused - reused)
                reused = progress.reused
            counts.update(r.verdict for r in rows if r.verdict)
            if on_progress:
                on_progress(progress)
    except KeyboardInterrupt:
        return counts, True
    finally:
        batches.close()  # stops the walk and the engine before the state closes
    return counts, False


@dataclass(frozen=True)
class _Outcome:
    progress: Progress
    verdicts: Counter[str]
    interrupted: bool
    state: dict[str, Any] | None


def _summary(
    config: ScanConfig,
    verdicts: Verdicts,
    writer: VerdictWriter,
    outcome: _Outcome,
    *,
    started: datetime,
) -> ScanSummary:
    """What a finished (or interrupted) scan did."""
    progress, classifier, stages = outcome.progress, verdicts.classifier, verdicts.stages
    rate = progress.ok_images / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
    return ScanSummary(
        out=str(config.out),
        format=config.fmt,
        model_id=classifier.info.model_id,
        model_sha256=classifier.sha256,
        model_trained=classifier.info.trained,
        providers=list(classifier.report.providers),
        provider_note=classifier.report.note,
        decoder=stages.name if config.engine == "local" else f"ray ({stages.name} on workers)",
        dali_failed_batches=stages.failed_batches(),
        threshold=verdicts.threshold,
        real_below=verdicts.real_below,
        batch_size=verdicts.batch_size,
        statuses={
            s: (writer.recovered.statuses + progress.statuses).get(s, 0)
            for s in ("ok", "skipped", "error")
        },
        verdicts=dict(outcome.verdicts),
        files_this_run=progress.done,
        files_resumed=len(writer.recovered.paths),
        elapsed_s=round(progress.elapsed_s, 3),
        images_per_s=round(rate, 2),
        interrupted=outcome.interrupted,
        started=started.isoformat(timespec="seconds"),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        versions=_versions(),
        warnings=_warnings(classifier, config, progress.done + len(writer.recovered.paths))
        + _drift_warnings(outcome.state),
        state=outcome.state,
    )


def _start_state(
    state: ScanState, config: ScanConfig, writer: VerdictWriter, stages: Stages
) -> None:
    """Open tonight's run; rows of a crashed run's journal go into the state first (the
    crash may have come between the journal and the database)."""
    state.begin(config.paths)
    if writer.recovered.paths:
        state.record(iter_rows(writer.journal))
    if config.hash_files:
        stages.per_file.known = state.known_p_ai


def _local_rows(
    config: ScanConfig,
    stages: Stages,
    files: Iterable[Found],
    classifier: Classifier,
    make_row: RowMaker,
    batch_size: int,
) -> Generator[tuple[list[Row], int], None, None]:
    """The local engine: (rows, files whose verdict was reused) per batch, in order."""
    decode_pool = DaemonPool(config.workers, "aiscan-decode")
    batch_pool = DaemonPool(1, "aiscan-batch")
    try:
        for batch in _batches(config, stages, files, batch_size, decode_pool, batch_pool):
            reused = sum(it.reused_p_ai is not None for it in batch.items)
            yield classify_batch(batch, classifier, make_row), reused
    finally:
        for pool in (batch_pool, decode_pool):
            pool.shutdown(wait_s=2.0)  # never waits on a stuck decode


def _warnings(classifier: Classifier, config: ScanConfig, rows: int) -> list[str]:
    out = []
    if not classifier.info.trained:
        out.append(
            f"model {classifier.info.model_id} was exported with untrained weights: "
            "its verdicts are meaningless (benchmark/test model)"
        )
    if rows == 0 and config.state is None:
        shard = "" if config.shard == "0/1" else f" in shard {config.shard}"
        out.append(f"no files found{shard} under {', '.join(config.paths)}")
    return out


def _drift_warnings(state: dict[str, Any] | None) -> list[str]:
    found = (state or {}).get("drift") or {}
    return [
        f"drift since the previous night: {key} moved by {found['deltas'][key]:+.3f} "
        f"(bound {DRIFT_BOUNDS[key]})"
        for key in found.get("flagged", [])
    ]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
