"""One scan: walk -> resume and state filters -> an engine (decode, classify) -> write.

:class:`Verdicts` is the rows of a scan without an output file; :func:`scan` puts them
into a writer (and the state database) and returns the run's summary. The model is opened
once, the engine is built once with everything it needs (:class:`EngineSpec`), and the
consumer alone counts.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiscan.model.files import write_atomic
from aiscan.model.meta import band_label

from ..core.classify import OpenModel
from ..core.discovery import Found, discover, in_shard
from ..core.errors import ConfigError
from ..core.rows import Judge, Row, judge_difference
from ..engines.local import LocalEngine
from ..engines.spec import BatchResult, Engine, EngineSpec
from ..nightly.state import DRIFT_BOUNDS, ScanState
from ..output.formats import iter_rows
from ..output.writer import VerdictWriter
from .config import ScanConfig
from .summary import Progress, ScanSummary, versions
from .walk import Walk

#: Error rows a summary names (the rest are counted, and in the output).
ERROR_SAMPLE = 10


def make_engine(config: ScanConfig, spec: EngineSpec) -> Engine:
    """The engine the configuration names, built from ``spec``: a
    :class:`~aiscan.scanner.engines.local.LocalEngine` or a
    :class:`~aiscan.scanner.engines.ray_data.RayEngine` (same ``run``, same results)."""
    if config.engine == "ray":
        from ..engines.ray_data import RayEngine

        return RayEngine(spec, config.ray_address, config.threads)
    return LocalEngine(spec)


class Verdicts:
    """The verdicts of a scan, without an output file: walk, decode, classify, in the order
    of the walk; each file once, each batch of rows as soon as it is classified.

    ``aiscan`` is this plus a writer (:func:`scan`); a library user iterates it (or
    :func:`iter_verdicts`) directly. It honours the configuration's model, device,
    decoder, limits, shard and engine; output, resume and state options are
    :func:`scan`'s. Iterate it once.

    Args:
        config: the scan.
        model: the model, already opened (:meth:`ScanConfig.open_model` when None).
        keep: called once per file found (in the walk's thread); a file it returns
            False for is left out (how :func:`scan` skips rows written before, or files
            the state database has seen unchanged).
        known: sha256 -> p_ai of identical content judged before (the state's).
        engine: the engine, already built from ``model`` and ``known`` (:func:`make_engine`
            when None).

    Raises:
        ConfigError, ModelError, DeviceError: before any file is touched.
    """

    def __init__(
        self,
        config: ScanConfig,
        *,
        model: OpenModel | None = None,
        keep: Callable[[Found], bool] | None = None,
        known: Callable[[str], float | None] | None = None,
        engine: Engine | None = None,
    ) -> None:
        if engine is not None and (model is None or known is not None):
            raise TypeError("an engine comes with the model it was built on, and its known")
        self.config = config
        self.model = model or config.open_model()
        self._keep = keep
        if engine is None:
            engine = make_engine(config, EngineSpec(self.model, config.decode_spec, known))
        self.engine = engine
        self.progress = Progress()
        #: the first error rows a writer saw (filled by :func:`scan`)
        self.error_sample: list[dict[str, str]] = []

    def _files(self) -> Iterator[Found]:
        shard_i, shard_n = self.config.shard_index_count
        for f in discover(self.config.paths, exclude=self.config.own_files):
            if in_shard(f.path, shard_i, shard_n) and (self._keep is None or self._keep(f)):
                yield f

    def batches(self) -> Generator[BatchResult, None, None]:
        """Results batch by batch, in the walk's order; ``progress`` is current at each."""
        progress = self.progress
        walk = Walk(self._files())
        walk.start()
        t0 = time.perf_counter()
        source = self.engine.run(walk)
        try:
            for result in source:
                progress.done += len(result.rows)
                progress.reused += result.reused
                progress.statuses.update(r.status for r in result.rows)
                progress.ok_images = progress.statuses["ok"]
                progress.found, progress.total = walk.found, walk.total
                progress.elapsed_s = time.perf_counter() - t0
                yield result
        finally:
            walk.stop()
            source.close()  # stops the engine: its pools, or its Ray dataset
            progress.elapsed_s = time.perf_counter() - t0

    def __iter__(self) -> Iterator[Row]:
        for result in self.batches():
            yield from result.rows


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
    model = config.open_model()
    with contextlib.ExitStack() as stack:
        state = _open_state(config, model, stack)
        # the engine before the output: an engine that cannot be built leaves no file
        known = state.known_p_ai if state is not None and config.hash_files else None
        engine = make_engine(config, EngineSpec(model, config.decode_spec, known))
        writer = VerdictWriter(
            config.out_file,
            config.out_format,
            # with a state, rerunning the same command continues tonight's output
            resume=config.resume or (state is not None and not config.overwrite),
            overwrite=config.overwrite,
        )
        stack.callback(writer.close)  # no-op after finish; else keeps the journal, unlocks
        refusal = _mixed_resume(config, model, writer)
        if refusal:
            writer.abandon()
            raise ConfigError(refusal)
        if not writer.recovered.paths:  # a fresh start: a summary beside it is an old run's
            config.summary_path.unlink(missing_ok=True)
        if state is not None:
            _start_state(state, config, writer)
        done = writer.recovered.paths
        verdicts = Verdicts(
            config,
            model=model,
            engine=engine,
            keep=lambda f: f.path not in done and (state is None or state.needs_scan(f)),
        )
        counts, judges, interrupted = _write(verdicts, writer, state, on_progress)
        state_stats = None
        if not interrupted:
            writer.finish()
            if state is not None:
                finished = state.finish(config.shard_index_count, verdicts.progress.reused)
                state_stats = asdict(finished)
    outcome = Outcome(verdicts.progress, counts, judges, interrupted, state_stats)
    summary = build_summary(config, verdicts, writer, outcome, started=started)
    write_atomic(config.summary_path, summary.to_json() + "\n")
    return summary


def _open_state(
    config: ScanConfig, model: OpenModel, stack: contextlib.ExitStack
) -> ScanState | None:
    """The state database of ``--state``, closed when ``stack`` unwinds (after the
    writer: the stack closes in reverse order), or None without one."""
    if config.state is None:
        return None
    state = ScanState(
        config.state,
        model.classifier.sha256,
        model.threshold,
        content=config.hash_files,
        real_below=model.real_below,
        judge=(model.classifier.model_label, model.rows.band),
    )
    stack.callback(state.close)
    return state


def _write(
    verdicts: Verdicts,
    writer: VerdictWriter,
    state: ScanState | None,
    on_progress: Callable[[Progress], None] | None,
) -> tuple[Counter[str], Counter[Judge], bool]:
    """The scan loop: (verdict counts, this run's judges, whether it was interrupted)."""
    counts: Counter[str] = Counter(writer.recovered.verdicts)
    judges: Counter[Judge] = Counter()
    errors = verdicts.error_sample
    batches = verdicts.batches()
    try:
        for result in batches:
            writer.write(result.rows)
            if state is not None:  # after the journal: a crash between is mended on rerun
                state.record(result.rows)
            counts.update(r.verdict for r in result.rows if r.verdict)
            judges.update(r.judge for r in result.rows if r.status == "ok")
            if len(errors) < ERROR_SAMPLE:
                failed = [r for r in result.rows if r.status == "error"]
                errors += [{"path": r.path, "error": r.error} for r in failed]
                del errors[ERROR_SAMPLE:]
            if on_progress:
                on_progress(verdicts.progress)
    except KeyboardInterrupt:
        return counts, judges, True
    finally:
        batches.close()  # stops the walk and the engine before the state closes
    return counts, judges, False


def _mixed_resume(config: ScanConfig, model: OpenModel, writer: VerdictWriter) -> str:
    """Why resuming this output would mix rows judged otherwise (another model, another
    ``ai`` or ``real`` edge, another evidence policy: each row records its judge), or ""
    when it would not, or when ``--mix-models`` allows it. Rows from before judges were
    recorded take the band of the summary beside them, where there is one."""
    if config.mix_models or not writer.recovered.judges:
        return ""
    mine = (model.classifier.model_label, model.rows.band)
    legacy = _summary_band(config)
    others: Counter[Judge] = Counter()
    for (label, band), n in writer.recovered.judges.items():
        if not band and legacy is None:
            if label != mine[0]:  # nothing recorded but the model: compare that
                others[(label, "")] += n
            continue
        judge = (label, band or legacy or "")
        if judge != mine:
            others[judge] += n
    if not others:
        return ""
    judge, n = others.most_common(1)[0]
    return (
        f"--resume: {config.out} holds {sum(others.values())} rows judged otherwise "
        f"(the output's vs this run's: {judge_difference(judge, mine)}): give another --out, "
        "--overwrite to judge everything again, or --mix-models to keep both"
    )


def _summary_band(config: ScanConfig) -> str | None:
    """The band a summary beside the output records (for rows written before rows
    recorded their own), or None."""
    try:
        before = json.loads(config.summary_path.read_text(encoding="utf-8"))
        policy = str(before.get("config", {}).get("evidence_policy", "report"))
        return band_label(float(before["threshold"]), float(before["real_below"]), policy)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _start_state(state: ScanState, config: ScanConfig, writer: VerdictWriter) -> None:
    """Open tonight's run; rows of a crashed run's journal go into the state first (the
    crash may have come between the journal and the database)."""
    state.begin(config.paths)
    if writer.recovered.paths:
        state.record(iter_rows(writer.journal))


@dataclass(frozen=True)
class Outcome:
    """How a scan ended: its progress, verdict counts, what judged this run's rows,
    interruption and state figures."""

    progress: Progress
    verdicts: Counter[str]
    judges: Counter[Judge]  # this run's rows only
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
    progress, model, engine = outcome.progress, verdicts.model, verdicts.engine
    classifier = model.classifier
    rate = progress.ok_images / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
    return ScanSummary(
        out=str(config.out),
        format=config.out_format,
        model_id=classifier.info.model_id,
        model_sha256=classifier.sha256,
        model_trained=classifier.info.trained,
        providers=list(classifier.report.providers),
        provider_note=classifier.report.note,
        decoder=engine.name,
        dali_failed_batches=engine.failed_batches,
        threshold=model.threshold,
        real_below=model.real_below,
        batch_size=model.batch_size,
        statuses={
            s: (writer.recovered.statuses + progress.statuses).get(s, 0)
            for s in ("ok", "skipped", "error")
        },
        verdicts=dict(outcome.verdicts),
        judges=_judges(writer.recovered.judges + outcome.judges),
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
        error_sample=list(verdicts.error_sample),
    )


def _judges(counts: Counter[Judge]) -> list[dict[str, Any]]:
    """What judged the output's rows: one entry per (model, band), most rows first."""
    return [{"model": m, "band": b, "rows": n} for (m, b), n in counts.most_common()]


def _warnings(classifier: Any, config: ScanConfig, rows: int) -> list[str]:
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
