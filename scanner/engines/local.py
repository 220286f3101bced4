"""The local engine: decode in a thread pool, ``prefetch`` batches ahead of inference,
through a bounded window of tasks, so that the memory a scan holds does not grow with the
size of the tree; the batch stage (DALI) of batch N+1 runs while batch N is classified.
Pillow and ONNX Runtime release the GIL while they work. A file that takes longer than
its time to decode becomes an error row and its thread is replaced; stopping never waits
on such a file (:mod:`.pool`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from aiscan.model.preprocessing import Preprocessing

from ..core.classify import classify_batch
from ..core.dali import DaliDecoder, dali_available, dali_claiming_decoder
from ..core.decode import Batch, Blob, CpuDecoder, Item
from ..core.discovery import Found
from ..core.errors import ConfigError
from ..core.infer import cuda_device_count
from .pool import DaemonPool, Task
from .spec import BatchResult, DecodeSpec, EngineSpec


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
    preprocessing: Preprocessing,
    decode: DecodeSpec,
    batch_size: int,
    known: Callable[[str], float | None] | None = None,
) -> Stages:
    """The decode stages for ``decode.decoder`` ("auto": DALI on a GPU when both are
    there, else the CPU path); a forced ``decode.mode`` of "full" is the CPU reference
    path, never DALI.

    Raises:
        ConfigError: DALI was asked for and is not installed.
    """
    use_dali = decode.decoder == "dali" or (
        decode.decoder == "auto" and cuda_device_count() > 0 and dali_available()
    )
    hash_files, evidence = decode.hash_files, decode.evidence
    if not use_dali or decode.mode == "full":
        cpu = CpuDecoder(
            preprocessing,
            decode.limits,
            hash_files=hash_files,
            decode=decode.mode,
            evidence=evidence,
            known=known,
        )
        return Stages("cpu", cpu, Batch, lambda: 0)
    if not dali_available():
        raise ConfigError("--decoder dali needs NVIDIA DALI: pip install 'aiscan-batch[dali]'")
    device_id = 0 if cuda_device_count() > 0 else None
    dali = DaliDecoder(preprocessing, batch_size, decode.workers, device_id, decode.limits)
    return Stages(
        "dali-gpu" if dali.on_gpu else "dali-cpu",
        dali_claiming_decoder(
            preprocessing, decode.limits, hash_files=hash_files, evidence=evidence, known=known
        ),
        dali,
        lambda: dali.failed_batches,
    )


class LocalEngine:
    """Rows for files (or images in memory) with this process's threads.

    Args:
        spec: the model, the decode settings and the known verdicts.

    Raises:
        ConfigError: DALI was asked for and is not installed.
    """

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        model = spec.model
        self.stages = decode_stages(
            model.classifier.info.preprocessing, spec.decode, model.batch_size, spec.known
        )

    @property
    def name(self) -> str:
        return self.stages.name

    @property
    def failed_batches(self) -> int:
        return self.stages.failed_batches()

    def run(self, files: Iterable[Found]) -> Generator[BatchResult, None, None]:
        """One result per batch of ``files``, in order."""
        return self._run(files, self.stages.per_file)

    def run_blobs(self, blobs: Iterable[Blob]) -> Generator[BatchResult, None, None]:
        """One result per batch of images in memory, in order."""
        return self._run(blobs, self.stages.per_file.decode_blob)

    def _run(
        self, inputs: Iterable[N], decode: Callable[[N], Item]
    ) -> Generator[BatchResult, None, None]:
        spec, model = self.spec.decode, self.spec.model
        decode_pool = DaemonPool(spec.workers, "aiscan-decode")
        batch_pool = DaemonPool(1, "aiscan-batch")

        def batch_stage(tasks: list[tuple[N, Task[Item]]]) -> Batch:
            return self.stages.per_batch(collect_batch(decode_pool, tasks, spec.timeout_s))

        pending: deque[Task[Batch]] = deque()
        try:
            ahead = submit_ahead(decode_pool, decode, inputs, model.batch_size, spec.prefetch)
            for tasks in ahead:
                pending.append(batch_pool.submit(batch_stage, tasks))
                if len(pending) > 1:
                    yield self._classify(pending.popleft().future.result())
            while pending:
                yield self._classify(pending.popleft().future.result())
        finally:
            for pool in (batch_pool, decode_pool):
                pool.shutdown(wait_s=2.0)  # never waits on a stuck decode

    def _classify(self, batch: Batch) -> BatchResult:
        reused = sum(it.reused_p_ai is not None for it in batch.items)
        model = self.spec.model
        return BatchResult(classify_batch(batch, model.classifier, model.rows), reused)
