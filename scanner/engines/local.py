"""TODO docstring."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from aiscan.model.pixels import DecodeLimits
from aiscan.model.preprocessing import Preprocessing

from ..core.classify import RowMaker, classify_batch
from ..core.dali import DaliDecoder, dali_available, dali_claiming_decoder
from ..core.decode import Batch, CpuDecoder, Item
from ..core.discovery import Found
from ..core.errors import ConfigError
from ..core.infer import Classifier, cuda_device_count
from ..core.rows import Row
from ..run.config import ScanConfig
from .pool import DaemonPool, Task


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
        dali_claiming_decoder(spec, limits, hash_files=hash_files, evidence=evidence),
        dali,
        lambda: dali.failed_batches,
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


def local_rows(
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
