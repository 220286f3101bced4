"""TODO docstring."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from aiscan.model.pixels import DecodeLimits

from ..core.errors import ConfigError
from ..core.infer import DEVICES, default_threads
from ..output.formats import FORMATS
from ..output.sidecars import sidecars

DECODERS = ("auto", "cpu", "dali")


EVIDENCE_POLICIES = ("report", "override")


ENGINES = ("local", "ray")


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index_s, count_s = text.split("/")
        index, count = int(index_s), int(count_s)
    except ValueError as exc:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from exc
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return index, count


@dataclass(frozen=True)
class ScanConfig:
    """Everything one scan needs.

    Attributes:
        paths: files and folders to scan.
        out: the verdict file to write (:func:`~aiscan.scanner.pipeline.scan` needs one;
            :func:`~aiscan.scanner.pipeline.iter_verdicts` writes no file).
        model: an aiscan ONNX model, or a shipped one by name ("default", "fast"); None
            means the shipped default.
        fmt: "csv", "jsonl" or "parquet".
        batch_size: images per inference call; None: 8 on the CPU, 128 on a GPU.
        workers: decode threads.
        threads: ONNX Runtime intra-op threads (0: as many as cores).
        device: "auto", "cpu", "cuda" or "tensorrt".
        decoder: "cpu", "dali" (on the GPU when there is one, else DALI's CPU operators),
            or "auto" (DALI when it is installed and a GPU is present, else "cpu").
        threshold: overrides the model's own threshold when set.
        real_below: overrides the model's own lower band edge (p_ai below it is "real",
            between it and the threshold "uncertain"); never above the threshold.
        resume: continue an interrupted (or finished) scan of the same output.
        overwrite: replace an existing output.
        hash_files: write each file's sha256.
        max_pixels: refuse images over this many pixels.
        max_file_mb: refuse files over this many MiB (before reading them).
        decode_memory_mb: MiB that concurrent decodes may hold together.
        decode_timeout: seconds a file may take to decode before it becomes an error row.
        exact_decode: decode every JPEG pixel (the reference path; slower), whatever the
            model's own decode mode; by default a scan decodes as the model was trained.
        evidence: read provenance metadata (C2PA, IPTC, generator chunks, camera EXIF).
        evidence_policy: "report" (evidence columns only) or "override" (declared-AI
            evidence sets the verdict to "ai"; p_ai stays the model's).
        state: SQLite state of earlier runs: scan only what is new or changed, reuse the
            verdicts of identical content, report deleted files
            (:mod:`aiscan.scanner.nightly.state`).
        engine: "local" (this process's threads) or "ray" (Ray Data: decode tasks and
            inference actors on a Ray cluster, :mod:`aiscan.scanner.engines.ray_data`).
        ray_address: the Ray cluster to join (None: a local instance, or RAY_ADDRESS).
        shard: "I/N" keeps only the files of shard I out of N.
        prefetch: batches decoded ahead of inference.
    """

    paths: tuple[str, ...]
    out: Path | None = None
    model: Path | str | None = "default"
    fmt: str = "csv"
    batch_size: int | None = None
    workers: int = field(default_factory=default_threads)
    threads: int = 0
    device: str = "auto"
    decoder: str = "auto"
    threshold: float | None = None
    real_below: float | None = None
    resume: bool = False
    overwrite: bool = False
    hash_files: bool = False
    max_pixels: int = DecodeLimits.max_pixels
    max_file_mb: int = DecodeLimits.max_file_bytes // 2**20
    decode_memory_mb: int = DecodeLimits.decode_memory // 2**20
    decode_timeout: float = 60.0
    exact_decode: bool = False
    evidence: bool = True
    evidence_policy: str = "report"
    state: Path | None = None
    engine: str = "local"
    ray_address: str | None = None
    shard: str = "0/1"
    prefetch: int = 2

    def __post_init__(self) -> None:
        if not self.paths:
            raise ConfigError("give at least one file or folder to scan")
        missing = [p for p in self.paths if not os.path.lexists(p)]
        if missing:
            raise ConfigError(f"no such file or folder: {', '.join(missing)}")
        if self.out is not None and self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a folder; give a file name")
        if self.out is not None and not self.out.parent.is_dir() and str(self.out.parent):
            raise ConfigError(f"--out {self.out}: folder {self.out.parent} does not exist")
        if self.fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
            raise ConfigError("--format parquet needs pyarrow: pip install 'aiscan[parquet]'")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.decoder not in DECODERS:
            raise ConfigError(
                f"--decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}"
            )
        for name, value, low, high in (
            ("batch-size", 1 if self.batch_size is None else self.batch_size, 1, 4096),
            ("workers", self.workers, 1, 256),
            ("threads", self.threads, 0, 256),
            ("prefetch", self.prefetch, 1, 64),
        ):
            if not low <= value <= high:
                raise ConfigError(f"--{name} must be within {low}..{high}, got {value}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be within [0, 1], got {self.threshold}")
        if self.real_below is not None and not 0.0 <= self.real_below <= 1.0:
            raise ConfigError(f"--real-below must be within [0, 1], got {self.real_below}")
        below, above = self.real_below, self.threshold
        if below is not None and above is not None and below > above:
            raise ConfigError(
                f"--real-below {self.real_below} is above --threshold {self.threshold}"
            )
        positive: tuple[tuple[str, float], ...] = (
            ("max-pixels", self.max_pixels),
            ("max-file-size", self.max_file_mb),
            ("decode-memory", self.decode_memory_mb),
            ("decode-timeout", self.decode_timeout),
        )
        for flag, amount in positive:
            if not amount > 0:
                raise ConfigError(f"--{flag} must be positive, got {amount}")
        if self.evidence_policy not in EVIDENCE_POLICIES:
            raise ConfigError(
                f"--evidence-policy must be one of {', '.join(EVIDENCE_POLICIES)}, "
                f"got {self.evidence_policy!r}"
            )
        if self.evidence_policy == "override" and not self.evidence:
            raise ConfigError("--evidence-policy override needs the evidence (drop --no-evidence)")
        if self.state is not None and self.state.is_dir():
            raise ConfigError(f"--state {self.state} is a folder; give a database file name")
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "ray":
            if importlib.util.find_spec("ray") is None:
                raise ConfigError("--engine ray needs Ray Data: pip install 'aiscan[ray]'")
            if self.decoder == "dali":
                raise ConfigError(
                    "--engine ray decodes on the workers' CPUs; --decoder dali is for the "
                    "local engine"
                )
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
        _parse_shard(self.shard)

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(
            max_pixels=self.max_pixels,
            max_file_bytes=self.max_file_mb * 2**20,
            decode_memory=self.decode_memory_mb * 2**20,
        )

    @property
    def decode_override(self) -> str | None:
        """The decode mode forced on the model's own (``None``: the model's own)."""
        return "full" if self.exact_decode else None

    @property
    def shard_index_count(self) -> tuple[int, int]:
        return _parse_shard(self.shard)

    @property
    def out_file(self) -> Path:
        """The output file, which a scan that writes one needs."""
        if self.out is None:
            raise ConfigError("a scan writes its verdicts to a file: give --out")
        return self.out

    @property
    def summary_path(self) -> Path:
        """The JSON run summary, next to the output."""
        return sidecars(self.out_file).summary

    @property
    def own_files(self) -> list[str]:
        """Files this scan writes (output, journal, summary, lock and their temporaries):
        never scanned, should the output lie inside a scanned folder."""
        own = [] if self.out is None else [str(p) for p in sidecars(self.out).all()]
        if self.state is not None:  # the database, its WAL files and its lock
            own += [str(self.state) + n for n in ("", "-wal", "-shm", "-journal", ".lock")]
        return own
