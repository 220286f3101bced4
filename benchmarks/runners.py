"""Timed runners: each takes a list of files (or a folder) and returns seconds.

Every runner is called once on a small warm-up set (decoders, thread pools, ONNX Runtime
sessions and the page cache all warm up), then timed ``repeats`` times on the full set.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aiscan.model.pixels import INTERPOLATIONS, normalize_batch
from aiscan.model.preprocessing import Preprocessing


@dataclass(frozen=True)
class Timing:
    """Repeated timings of one runner on one input set.

    Attributes:
        stage: what part of the work the runner does ("baseline", "decode", ...).
        cpu_busy: CPU seconds used per wall second over the timed runs (cores kept busy).
        gpu_util: mean GPU utilisation in percent while timed, when readable.
    """

    runner: str
    corpus: str
    images: int
    seconds: list[float]
    stage: str = ""
    cpu_busy: float = 0.0
    gpu_util: float | None = None

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
            "stage": self.stage,
            "runner": self.runner,
            "corpus": self.corpus,
            "images": self.images,
            "seconds": [round(t, 4) for t in self.seconds],
            "median_s": round(self.median_s, 4),
            "images_per_s": round(self.images_per_s, 2),
            "spread": round(self.spread, 3),
            "cpu_busy": round(self.cpu_busy, 2),
            "gpu_util": self.gpu_util,
        }


def _cpu_seconds() -> float:
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(
    name: str,
    corpus: str,
    run: Callable[[Sequence[Path]], object],
    files: Sequence[Path],
    *,
    repeats: int,
    warmup: int = 4,
    stage: str = "",
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Warm ``run`` up on a few files (not timed), then time it ``repeats`` times by
    ``clock``."""
    run(files[:warmup])
    seconds = []
    cpu0 = _cpu_seconds()
    with GpuSampler() as gpu:
        for _ in range(repeats):
            t0 = clock()
            run(files)
            seconds.append(clock() - t0)
    busy = (_cpu_seconds() - cpu0) / sum(seconds)
    return Timing(name, corpus, len(files), seconds, stage, busy, gpu.mean)


class GpuSampler:
    """Mean GPU utilisation from ``nvidia-smi`` while the block runs (None without it)."""

    def __init__(self) -> None:
        self.mean: float | None = None
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        out, _ = self._proc.communicate()
        values = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
        self.mean = round(statistics.mean(values), 1) if values else None


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
    model: Path,
    *,
    batch_size: int | None,
    workers: int,
    device: str = "cpu",
    decoder: str = "cpu",
    threads: int = 0,
    evidence: bool = True,
) -> Callable[[Sequence[Path]], None]:
    """The full scanner (discovery, decode, inference, evidence, CSV) on the given files."""
    from aiscan.scanner.run.config import ScanConfig
    from aiscan.scanner.run.pipeline import scan

    out_dir = Path(tempfile.mkdtemp(prefix="aiscan-bench-"))

    def run(files: Sequence[Path]) -> None:
        config = ScanConfig(
            paths=tuple(str(f) for f in files),
            out=out_dir / "v.csv",
            model=model,
            overwrite=True,
            batch_size=batch_size,
            workers=workers,
            device=device,
            decoder=decoder,
            threads=threads,
            evidence=evidence,
        )
        scan(config)

    return run


def decode_only(
    spec: Preprocessing, workers: int, *, decode: str | None = None
) -> Callable[[Sequence[Path]], None]:
    """aiscan's decode stage alone, on its thread pool (``decode="full"``: every pixel,
    as the reference decode; default: the model's own mode)."""
    from aiscan.scanner.core.decode import CpuDecoder
    from aiscan.scanner.core.discovery import Found

    decoder = CpuDecoder(spec, decode=decode)

    def run(files: Sequence[Path]) -> None:
        with ThreadPoolExecutor(workers) as pool:
            for item in pool.map(decoder, (Found(str(f)) for f in files)):
                if item.status != "ok":
                    raise RuntimeError(f"{item.path}: {item.error}")

    return run


def evidence_only() -> Callable[[Sequence[Path]], None]:
    """Provenance metadata alone (C2PA, XMP, text chunks, EXIF), one file after another:
    what the evidence columns cost per file on top of decoding."""
    from aiscan.scanner.core.evidence import read_evidence
    from aiscan.scanner.core.sniffing import SNIFF_BYTES, sniff

    def run(files: Sequence[Path]) -> None:
        for f in files:
            with open(f, "rb") as fh:
                read_evidence(fh, sniff(fh.read(SNIFF_BYTES)) or "")

    return run


def inference_only(
    model: Path, spec: Preprocessing, batch: int, device: str = "cpu", threads: int = 0
) -> Callable[[Sequence[Path]], None]:
    """The model alone on synthetic input, in batches (the files only set the count),
    shaped as the model's own metadata says (``spec`` is the fallback)."""
    from aiscan.scanner.core.infer import Classifier

    clf = Classifier(model, device, threads=threads)
    spec = clf.info.preprocessing or spec
    h, w = spec.input_size
    rng = np.random.default_rng(0)
    tensor = normalize_batch(
        [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)], spec
    )

    def run(files: Sequence[Path]) -> None:
        for start in range(0, len(files), batch):
            clf.predict(tensor[: min(batch, len(files) - start)])

    return run


def _torch_model(arch: str) -> Any:
    """Untrained eager model of ``arch`` (an ensemble's ``a+b``: its members, averaged)."""
    import torch

    from aiscan.model.factory import create

    torch.manual_seed(0)
    return create(arch).eval()


def _pil_input(path: Path, spec: Preprocessing) -> np.ndarray:
    """The report's transform: PIL open, RGB, resize, normalise (one CHW array)."""
    h, w = spec.input_size
    img = Image.open(path).convert("RGB").resize((w, h), INTERPOLATIONS[spec.interpolation])
    x = (np.asarray(img, np.float32) / 255.0 - np.asarray(spec.mean, np.float32)) / np.asarray(
        spec.std, np.float32
    )
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def naive_torch(arch: str, spec: Preprocessing) -> Callable[[Sequence[Path]], None]:
    """The report's way: PIL decode and resize, PyTorch eager timm model, one image at a time."""
    import torch

    model = _torch_model(arch)

    def run(files: Sequence[Path]) -> None:
        with torch.no_grad():
            for f in files:
                model(torch.from_numpy(_pil_input(f, spec))[None])

    return run


class _PilFiles:
    def __init__(self, files: Sequence[Path], spec: Preprocessing) -> None:
        self.files, self.spec = list(files), spec

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        return _pil_input(self.files[i], self.spec)


def torch_loader(
    arch: str, spec: Preprocessing, batch: int, workers: int
) -> Callable[[Sequence[Path]], None]:
    """The batched PyTorch way: DataLoader with worker processes, eager model."""
    import torch

    model = _torch_model(arch)

    def run(files: Sequence[Path]) -> None:
        loader: Any = torch.utils.data.DataLoader(
            _PilFiles(files, spec),  # type: ignore[arg-type]
            batch_size=batch,
            num_workers=workers,
            collate_fn=lambda b: torch.from_numpy(np.stack(b)),
        )
        with torch.no_grad():
            for x in loader:
                model(x)

    return run


def decode_dali(
    spec: Preprocessing, workers: int, batch: int, device_id: int | None
) -> Callable[[Sequence[Path]], None]:
    """aiscan's DALI path alone: header probe on the thread pool, then DALI per batch."""
    from aiscan.scanner.core.dali import DaliDecoder, dali_claiming_decoder
    from aiscan.scanner.core.discovery import Found

    probe = dali_claiming_decoder(spec)
    dali = DaliDecoder(spec, batch, workers, device_id)

    def run(files: Sequence[Path]) -> None:
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(files), batch):
                chunk = files[start : start + batch]
                out = dali(list(pool.map(probe, (Found(str(f)) for f in chunk))))
                if out.device is not None:
                    out.device.as_cpu()  # wait for the GPU work (a host copy, decode-only)

    return run


def write_only(rows_per_file: int = 1) -> Callable[[Sequence[Path]], None]:
    """aiscan's CSV writer alone: one synthetic row per file, flushed per batch of 16."""
    from aiscan.scanner.core.rows import Row
    from aiscan.scanner.output.writer import VerdictWriter

    out_dir = Path(tempfile.mkdtemp(prefix="aiscan-bench-write-"))

    def run(files: Sequence[Path]) -> None:
        writer = VerdictWriter(out_dir / "w.csv", overwrite=True)
        rows = [
            Row(
                path=str(f),
                status="ok",
                p_ai=0.5,
                verdict="ai",
                format="JPEG",
                width=1024,
                height=768,
                bytes=250000,
                model="m@0",
                band="ai>=0.5 real<0.5 evidence=report",
            )
            for f in files
            for _ in range(rows_per_file)
        ]
        for start in range(0, len(rows), 16):
            writer.write(rows[start : start + 16])
        writer.finish()

    return run


def discovery(folder: Path) -> Callable[[Sequence[Path]], None]:
    """aiscan's discovery of the corpus folder (the files only set the count)."""
    from aiscan.scanner.core.discovery import discover

    def run(files: Sequence[Path]) -> None:
        for _ in discover([str(folder)]):
            pass

    return run


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, or None."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return out.splitlines()[0] if out else None


#: CPU features that change what the int8 kernels of ONNX Runtime compute (VNNI: exact
#: u8s8 dot products; without it, AVX2's saturate) or how fast anything runs.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def emit_report(report: dict[str, Any], out: Path | None) -> None:
    """Print a benchmark's JSON report and, with ``out``, write it there too."""
    import json

    text = json.dumps(report, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


def machine() -> dict[str, object]:
    """What this ran on."""
    import onnxruntime

    cpu, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        names = (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
        cpu = next(names, cpu)
        flags = set(next((ln for ln in lines if ln.startswith("flags")), "").split())
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {
        "cpu": cpu,
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "onnxruntime": onnxruntime.__version__,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu_name(),
    }
