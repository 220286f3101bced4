"""TODO docstring."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiscan.model.files import write_atomic

from ..core.classify import RowMaker
from ..core.discovery import Found, discover, in_shard
from ..core.infer import Classifier, default_batch_size
from ..core.models import resolve_model
from ..core.rows import Row
from ..engines.local import (
    Stages,
    decode_stages,
    local_rows,
)
from ..nightly.state import DRIFT_BOUNDS, ScanState
from ..output.formats import iter_rows
from ..output.writer import VerdictWriter
from .config import ScanConfig
from .summary import Progress, ScanSummary, versions
from .walk import Walk


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
            from ..engines.ray_data import ray_rows

            source = ray_rows(config, walk, self.classifier, self.make_row, self.batch_size)
        else:
            source = local_rows(
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
    summary = build_summary(
        config,
        verdicts,
        writer,
        Outcome(verdicts.progress, counts, interrupted, state_stats),
        started=started,
    )
    write_atomic(config.summary_path, summary.to_json() + "\n")
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


@dataclass(frozen=True)
class Outcome:
    progress: Progress
    verdicts: Counter[str]
    interrupted: bool
    state: dict[str, Any] | None


def build_summary(
    config: ScanConfig,
    verdicts: Verdicts,
    writer: VerdictWriter,
    outcome: Outcome,
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
        versions=versions(),
        warnings=_warnings(classifier, config, progress.done + len(writer.recovered.paths))
        + _drift_warnings(outcome.state),
        state=outcome.state,
    )


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
