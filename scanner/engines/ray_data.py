"""``--engine ray``: the same decode and classification code, on a Ray cluster.

The driver lists the files (the same discovery, resume, shard and state filters as the
local engine) and streams them, in chunks, through Ray Data: ``map_batches`` with a decode
task (:class:`~aiscan.scanner.core.CpuDecoder`, the local engine's per-file stage) on CPU
workers, then ``map_batches`` with an actor pool (:class:`_Classify`), each actor holding
one ONNX Runtime session and running the local engine's own
:func:`~aiscan.scanner.core.classify_batch`; with ``num_gpus`` per actor where the cluster
has GPUs. Rows come back to the driver in order and go through the same writer (and
state), so the verdict file is the same as a local run's. A task or actor that dies is
retried by Ray; rows are written only when they reach the driver, so nothing is lost or
written twice.

Workers need aiscan installed (its wheel: ``pip wheel --no-deps -w dist .`` in the
checkout, then ``pip install dist/aiscan_batch-*.whl`` on each worker; the name ``aiscan``
on PyPI is another project) and the images at the same paths (shared storage). The
model travels through Ray's object store: workers need no copy.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import numpy as np

from aiscan.model.pixels import DecodeLimits
from aiscan.model.preprocessing import Preprocessing

from ..core.classify import RowMaker, classify_batch
from ..core.decode import Batch, CpuDecoder, Item
from ..core.discovery import Found
from ..core.errors import ConfigError
from ..core.evidence import Evidence
from ..core.infer import Classifier
from ..core.rows import ROW_SCHEMA, Row, as_status
from .spec import BatchResult, EngineSpec

#: Item fields that travel between the decode tasks and the inference actors as columns.
_ITEM_COLUMNS = ("path", "status", "error", "format", "width", "height", "bytes", "sha256")


def _decode_batch(
    batch: dict[str, np.ndarray],
    spec_json: str,
    limits: DecodeLimits,
    hash_files: bool,
    evidence: bool,
    decode: str | None,
) -> dict[str, np.ndarray]:
    """Decode task: the local engine's CPU decoder over one batch of found files."""
    _chaos()
    decoder = CpuDecoder(
        Preprocessing.from_json(spec_json),
        limits,
        hash_files=hash_files,
        decode=decode,
        evidence=evidence,
    )
    found = [
        Found(str(p), error=str(e), skip_reason=str(s))
        for p, e, s in zip(batch["path"], batch["error"], batch["skip_reason"], strict=True)
    ]
    items = [decoder(f) for f in found]
    h, w = decoder.spec.input_size
    pixels = np.zeros((len(items), h, w, 3), np.uint8)
    for i, it in enumerate(items):
        if it.pixels is not None:
            pixels[i] = it.pixels
    out: dict[str, Any] = {
        c: np.array([getattr(it, c) if getattr(it, c) is not None else -1 for it in items])
        if c in ("width", "height", "bytes")
        else np.array([getattr(it, c) for it in items], dtype=object)
        for c in _ITEM_COLUMNS
    }
    out["has_pixels"] = np.array([it.pixels is not None for it in items])
    out["pixels"] = pixels
    out["evidence_kind"] = np.array([it.evidence.kind for it in items], dtype=object)
    out["evidence_detail"] = np.array([it.evidence.detail for it in items], dtype=object)
    out["generator"] = np.array([it.evidence.generator for it in items], dtype=object)
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
    """Inference actor: one ONNX Runtime session; the local engine's rows for a batch."""

    def __init__(
        self,
        model: Any,
        device: str,
        threads: int,
        threshold: float,
        policy: str,
        real_below: float | None = None,
    ) -> None:
        import ray

        data = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        fd, path = tempfile.mkstemp(suffix=".onnx", prefix="aiscan-model-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self.classifier = Classifier(path, device, threads=threads)
        finally:
            os.unlink(path)  # the session and the model's hash are made: no longer needed
        self.make_row = RowMaker(self.classifier.model_label, threshold, policy, real_below)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = []
        for i in range(len(batch["path"])):
            width, height, nbytes = (_size(batch[c][i]) for c in ("width", "height", "bytes"))
            item = Item(
                str(batch["path"][i]),
                status=as_status(str(batch["status"][i])),
                error=str(batch["error"][i]),
                format=str(batch["format"][i]),
                width=width,
                height=height,
                bytes=nbytes,
                sha256=str(batch["sha256"][i]),
            )
            item.evidence = Evidence(
                str(batch["evidence_kind"][i]),
                str(batch["evidence_detail"][i]),
                str(batch["generator"][i]),
            )
            if batch["has_pixels"][i]:
                item.pixels = batch["pixels"][i]
            items.append(item)
        rows = classify_batch(Batch(items), self.classifier, self.make_row)
        return _encode_rows(rows)


def _size(value: Any) -> int | None:
    """Sizes travel as integers, -1 for none."""
    return None if int(value) < 0 else int(value)


def _encode_rows(rows: list[Row]) -> dict[str, np.ndarray]:
    """Rows as Ray Data columns (object arrays; a missing value as "")."""
    return {
        c.name: np.array(["" if (v := getattr(r, c.name)) is None else v for r in rows], object)
        for c in ROW_SCHEMA
    }


def _row(batch: dict[str, np.ndarray], i: int) -> Row:
    """Row ``i`` of columns made by :func:`_encode_rows`, typed by :data:`ROW_SCHEMA`."""
    values: dict[str, Any] = {}
    for c in ROW_SCHEMA:
        value = batch[c.name][i]
        values[c.name] = None if c.nullable and value == "" else c.python(value)
    return Row(**values)


class RayEngine:
    """Rows for files, on a Ray cluster: the local engine's decoder in Ray Data tasks,
    its classification in an actor pool.

    The files reach Ray in chunks of at most ``chunk_files`` (one dataset each, in order),
    so the driver never holds the whole list of a tree.

    Args:
        spec: the model, the decode settings; ``spec.known`` must be None (the state's
            known verdicts live in the driver's database, which the workers cannot reach).
        address: the Ray cluster to join (None: a local instance, or RAY_ADDRESS).
        threads: ONNX Runtime threads per CPU actor (0: as many as cores).
        chunk_files: files per Ray dataset.

    Raises:
        ConfigError: known verdicts were given.
    """

    @property
    def name(self) -> str:
        return "ray (cpu decode on workers)"

    @property
    def failed_batches(self) -> int:
        return 0

    def __init__(
        self,
        spec: EngineSpec,
        address: str | None = None,
        threads: int = 0,
        chunk_files: int = 20_000,
    ) -> None:
        if spec.known is not None:
            raise ConfigError(
                "--engine ray cannot reuse the state's verdicts of identical content "
                "(--state with --sha256): use the local engine for that run"
            )
        self.spec, self.address, self.threads = spec, address, threads
        self.chunk_files = max(1, chunk_files)

    def run(self, files: Iterable[Found]) -> Generator[BatchResult, None, None]:
        """One result per batch of ``files``, in order."""
        import ray

        source = iter(files)
        model_ref = None
        while chunk := list(itertools.islice(source, self.chunk_files)):
            if not ray.is_initialized():
                ray.init(address=self.address, log_to_driver=False, include_dashboard=False)
            if model_ref is None:
                model_ref = ray.put(self.spec.model.classifier.path.read_bytes())
            yield from self._chunk(chunk, model_ref)

    def _chunk(self, files: list[Found], model_ref: Any) -> Iterator[BatchResult]:
        import ray
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        gpus = ray.cluster_resources().get("GPU", 0)
        model, decode = self.spec.model, self.spec.decode
        found = [{"path": f.path, "error": f.error, "skip_reason": f.skip_reason} for f in files]
        blocks = max(1, math.ceil(len(found) / model.batch_size))
        ds: Any = ray.data.from_items(found, override_num_blocks=blocks)
        ds = ds.map_batches(
            _decode_batch,
            batch_size=model.batch_size,
            batch_format="numpy",
            num_cpus=1,
            fn_kwargs={
                "spec_json": model.classifier.info.preprocessing.to_json(),
                "limits": decode.limits,
                "hash_files": decode.hash_files,
                "evidence": decode.evidence,
                "decode": decode.mode,
            },
        )
        ds = ds.map_batches(
            _Classify,
            batch_size=model.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=max(1, int(gpus) if gpus else 1)),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
            fn_constructor_kwargs={
                "model": model_ref,
                "device": "cuda" if gpus else "cpu",
                "threads": 0 if gpus else self.threads,
                "threshold": model.threshold,
                "policy": model.rows.evidence_policy,
                "real_below": model.real_below,
            },
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield BatchResult([_row(batch, i) for i in range(len(batch["path"]))])
