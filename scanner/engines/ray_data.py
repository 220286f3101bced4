"""``--engine ray``: the same decode and classification code, on a Ray cluster.

The driver lists the files (the same discovery, resume, shard and state filters as the
local engine) into Ray's object store, block by block, and one Ray Data dataset streams
them: ``map_batches`` with a decode task (:class:`~aiscan.scanner.core.CpuDecoder`, the
local engine's per-file stage, on its daemon threads with the same per-file time budget)
on CPU workers, then ``map_batches`` with Ray Data's autoscaling actor pool
(:class:`_Classify`), each actor holding one ONNX Runtime session and running the local
engine's own :func:`~aiscan.scanner.core.classify_batch` with the scan's own row maker;
one actor per GPU where the cluster has GPUs. Items and rows travel as the objects they
are: no second codec beside the row schema. Rows come back to the driver in order and go
through the same writer (and state), so the verdict file is the same as a local run's. A
task or actor that dies is retried by Ray; rows are written only when they reach the
driver, so nothing is lost or written twice.

Workers need aiscan installed (its wheel: ``pip wheel --no-deps -w dist .`` in the
checkout, then ``pip install dist/aiscan_batch-*.whl`` on each worker; the name ``aiscan``
on PyPI is another project) and the images at the same paths (shared storage). The
model travels through Ray's object store: workers need no copy.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiscan.model.preprocessing import Preprocessing

from ..core.classify import RowMaker, classify_batch
from ..core.decode import Batch, CpuDecoder
from ..core.discovery import Found
from ..core.errors import ConfigError
from ..core.infer import Classifier
from .local import collect_batch
from .pool import DaemonPool
from .spec import BatchResult, DecodeSpec, EngineSpec

#: Files per block of the dataset's input: the driver puts the walk's paths into Ray's
#: object store block by block, so it never holds a whole tree's list itself. A block is
#: also one task's work (Ray Data maps a block per task) and the unit in which rows come
#: back: 4096 ran a 400-file scan as one task on one CPU and returned every row at its
#: end; 128 keeps a two-node cluster's actors busy and the journal growing.
BLOCK_FILES = 128


@dataclass(frozen=True)
class _DecodeJob:
    """What a decode task needs: the model's preprocessing and the local engine's decode
    settings (limits, hashing, evidence, threads and the per-file time budget)."""

    spec_json: str
    decode: DecodeSpec


def _decode_batch(batch: dict[str, np.ndarray], job: _DecodeJob) -> dict[str, np.ndarray]:
    """Decode task: the local engine's CPU decoder over one batch of found files, on its
    own daemon threads with the local engine's per-file time budget (a decode that hangs
    becomes an error row, never a stuck task). Items travel as objects."""
    _chaos()
    d = job.decode
    decoder = CpuDecoder(
        Preprocessing.from_json(job.spec_json),
        d.limits,
        hash_files=d.hash_files,
        decode=d.mode,
        evidence=d.evidence,
    )
    found = [
        Found(str(p), error=str(e), skip_reason=str(s))
        for p, e, s in zip(batch["path"], batch["error"], batch["skip_reason"], strict=True)
    ]
    pool = DaemonPool(max(1, d.workers), "aiscan-ray-decode")
    try:
        tasks = [(f, pool.submit(decoder, f)) for f in found]
        items = collect_batch(pool, tasks, d.timeout_s)
    finally:
        pool.shutdown()
    return {"item": _objects(items)}


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _chaos() -> None:
    """Fault injection for tests of Ray's retries: with AISCAN_CHAOS_KILL_ONCE set to a
    path that does not exist yet, the first decode task to see it creates it and kills
    its own worker process, as a crashed or preempted node would."""
    marker = os.environ.get("AISCAN_CHAOS_KILL_ONCE")
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


class _Classify:
    """Inference actor: one ONNX Runtime session, the scan's own row maker (the verdict
    policy travels whole, not rebuilt); the local engine's rows for a batch of items."""

    def __init__(self, model: Any, device: str, threads: int, rows: RowMaker) -> None:
        import ray

        data = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        fd, path = tempfile.mkstemp(suffix=".onnx", prefix="aiscan-model-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self.classifier = Classifier(path, device, threads=threads)
        finally:
            os.unlink(path)  # the session and the model's hash are made: no longer needed
        self.rows = rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = classify_batch(Batch(list(batch["item"])), self.classifier, self.rows)
        return {"row": _objects(rows)}


def _blocks(files: Iterable[Found]) -> list[Any]:
    """The walk's files as object-store blocks of :data:`BLOCK_FILES` (Arrow tables):
    the driver keeps their references, never the paths."""
    import pyarrow as pa
    import ray

    refs = []
    source = iter(files)
    while chunk := list(itertools.islice(source, BLOCK_FILES)):
        table = pa.table(
            {
                "path": pa.array([f.path for f in chunk], pa.string()),
                "error": pa.array([f.error for f in chunk], pa.string()),
                "skip_reason": pa.array([f.skip_reason for f in chunk], pa.string()),
            }
        )
        refs.append(ray.put(table))
    return refs


def actor_slots(node_cpus: list[float], threads: int) -> tuple[int, int]:
    """(max actors, CPUs each reserves) for CPU actors of ``threads`` threads on nodes of
    ``node_cpus`` CPUs: an actor lives on one node, so it never asks for more CPUs than
    the largest node has (two nodes of one CPU each would otherwise leave a two-CPU actor
    pending for ever), and each node holds as many as fit in it."""
    per_node = [int(c) for c in node_cpus if c >= 1] or [1]
    reserve = max(1, min(threads, max(per_node)))
    return max(1, sum(c // reserve for c in per_node)), reserve


class RayEngine:
    """Rows for files, on a Ray cluster: the local engine's decoder in Ray Data tasks
    (its per-file time budget and threads included), its classification in Ray Data's
    autoscaling actor pool (one actor per GPU; on CPUs, up to the cluster's cores over
    the threads of one actor), over one dataset for the whole file list, streamed.

    Args:
        spec: the model, the decode settings; ``spec.known`` must be None (the state's
            known verdicts live in the driver's database, which the workers cannot reach).
        address: the Ray cluster to join (None: a local instance, or RAY_ADDRESS).
        threads: ONNX Runtime threads (and Ray CPUs) per CPU actor (0: 2).

    Raises:
        ConfigError: known verdicts were given.
    """

    @property
    def name(self) -> str:
        return "ray (cpu decode on workers)"

    @property
    def failed_batches(self) -> int:
        return 0

    def __init__(self, spec: EngineSpec, address: str | None = None, threads: int = 0) -> None:
        if spec.known is not None:
            raise ConfigError(
                "--engine ray cannot reuse the state's verdicts of identical content "
                "(--state with --sha256): use the local engine for that run"
            )
        self.spec, self.address = spec, address
        self.threads = threads or 2

    def actors(self) -> tuple[int, int, int, bool]:
        """(min, max) inference actors for this cluster, the CPUs each reserves, and
        whether they use GPUs.

        On GPUs: one actor per GPU; the decode tasks run on the CPUs beside them. On
        CPUs the decode map asks for the same CPUs as an actor, so Ray Data fuses the two
        maps (its plan reads ``MapBatches(_decode_batch)->MapBatches(_Classify)``): each
        actor decodes and classifies its own blocks, and actors may take every CPU (an
        actor pool that held every CPU beside a separate decode stage would wait for
        ever: no CPU left to decode).
        """
        import ray

        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            return 1, gpus, 1, True
        cpus = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
        most, reserve = actor_slots(cpus, self.threads)
        return 1, most, reserve, False

    def run(self, files: Iterable[Found]) -> Generator[BatchResult, None, None]:
        """One result per batch of ``files``, in order."""
        import ray
        import ray.data

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False)
        refs = _blocks(files)
        if not refs:
            return
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        model, decode = self.spec.model, self.spec.decode
        low, high, reserve, on_gpu = self.actors()
        ds: Any = ray.data.from_arrow_refs(refs)
        ds = ds.map_batches(
            _decode_batch,
            batch_size=model.batch_size,
            batch_format="numpy",
            num_cpus=1 if on_gpu else reserve,  # on CPUs: fused into the actors (above)
            fn_kwargs={"job": _DecodeJob(model.classifier.info.preprocessing.to_json(), decode)},
        )
        ds = ds.map_batches(
            _Classify,
            batch_size=model.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
            num_gpus=1 if on_gpu else 0,
            num_cpus=reserve,
            fn_constructor_kwargs={
                "model": ray.put(model.classifier.path.read_bytes()),
                "device": "cuda" if on_gpu else "cpu",
                "threads": 0 if on_gpu else self.threads,
                "rows": model.rows,
            },
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield BatchResult(list(batch["row"]))
