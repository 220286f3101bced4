"""``--engine ray``: the same decode and classification code, on a Ray cluster.

The driver lists the files (the same discovery, resume, shard and state filters as the
local engine) and streams them through Ray Data: ``map_batches`` with a decode task
(:class:`~aiscan.scanner.core.decode.CpuDecoder`, the local engine's per-file stage) on CPU
workers, then ``map_batches`` with an actor pool (:class:`_Classify`), each actor holding
one ONNX Runtime session and running the local engine's own :func:`classify_batch`; with
``num_gpus`` per actor where the cluster has GPUs. Rows come back to the driver in order
and go through the same writer (and state), so the verdict file is the same as a local
run's, byte for byte in its schema. A task or actor that dies is retried by Ray; rows are
written only when they reach the driver, so nothing is lost or written twice.

Workers need aiscan installed (``pip install aiscan``) and the images at the same paths
(shared storage). The model travels through Ray's object store: workers need no copy.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Generator, Iterable
from typing import Any

import numpy as np

from aiscan.model.pixels import DecodeLimits
from aiscan.model.preprocessing import Preprocessing

from ..core.decode import Batch, CpuDecoder, Item
from ..core.discovery import Found
from ..core.evidence import Evidence
from ..core.infer import Classifier
from ..core.rows import ROW_FIELDS, Row, as_status
from ..run.config import ScanConfig

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
        for p, e, s in zip(batch["path"], batch["error"], batch["skipped"], strict=True)
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

        from ..core.classify import RowMaker

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
        from ..core.classify import classify_batch

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
        return {
            name: np.array([_encode(getattr(r, name)) for r in rows], dtype=object)
            for name in ROW_FIELDS
        }


def _size(value: Any) -> int | None:
    """Sizes travel as integers, -1 for none."""
    return None if int(value) < 0 else int(value)


def _encode(value: Any) -> Any:
    return "" if value is None else value


def _row(batch: dict[str, np.ndarray], i: int) -> Row:
    values = {name: batch[name][i] for name in ROW_FIELDS}
    values["p_ai"] = None if values["p_ai"] == "" else float(values["p_ai"])
    for name in ("width", "height", "bytes"):
        values[name] = None if values[name] == "" else int(values[name])
    for name in set(ROW_FIELDS) - {"p_ai", "width", "height", "bytes"}:
        values[name] = str(values[name])
    return Row(**values)


def ray_rows(
    config: ScanConfig,
    files: Iterable[Found],
    classifier: Classifier,
    make_row: Any,
    batch_size: int,
) -> Generator[tuple[list[Row], int], None, None]:
    """The Ray engine: (rows, 0) per batch, in the order of ``files``."""
    import ray
    import ray.data

    found = [{"path": f.path, "error": f.error, "skipped": f.skip_reason} for f in files]
    if not found:
        return
    if not ray.is_initialized():
        ray.init(address=config.ray_address, log_to_driver=False, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    gpus = ray.cluster_resources().get("GPU", 0)
    actors = max(1, int(gpus) if gpus else 1)
    model_ref = ray.put(classifier.path.read_bytes())
    blocks = max(1, math.ceil(len(found) / batch_size))
    ds: Any = ray.data.from_items(found, override_num_blocks=blocks)
    ds = ds.map_batches(
        _decode_batch,
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1,
        fn_kwargs={
            "spec_json": classifier.info.preprocessing.to_json(),
            "limits": config.limits,
            "hash_files": config.hash_files,
            "evidence": config.evidence,
            "decode": config.decode_override,
        },
    )
    ds = ds.map_batches(
        _Classify,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
        fn_constructor_kwargs={
            "model": model_ref,
            "device": "cuda" if gpus else "cpu",
            "threads": 0 if gpus else config.threads,
            "threshold": make_row.threshold,
            "policy": "override" if make_row.override else "report",
            "real_below": make_row.real_below,
        },
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield [_row(batch, i) for i in range(len(batch["path"]))], 0
