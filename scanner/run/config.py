"""A scan's configuration, validated once, before any work starts.

:class:`DetectorConfig` is what classifying needs (model, device, decoding, limits,
verdict policy): the API's :class:`~aiscan.scanner.api.Detector` takes it.
:class:`ScanConfig` extends it with what a scan of a tree adds (paths, output, resume,
state, engine, shard): ``aiscan`` and :func:`~aiscan.scanner.run.pipeline.scan` take it.
Both raise :class:`~aiscan.scanner.core.ConfigError` naming the option to change.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from aiscan.model.pixels import DecodeLimits

from ..core.classify import OpenModel
from ..core.errors import ConfigError
from ..core.infer import DEVICES, default_threads
from ..engines.spec import DecodeSpec
from ..output.formats import resolve_format
from ..output.sidecars import sidecars
from .fetch import fetch_encoder, offline_by_environment

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


def _is_an_input_image(out: Path, paths: tuple[str, ...]) -> bool:
    """Whether ``out`` is a file the scan reads: a given path itself, or an image (by its
    first bytes or its name) below a given folder. A verdict file there is not: a scan
    never reads its own output, and may resume it."""
    from ..core.sniffing import SNIFF_BYTES, claims_image, sniff

    if not out.is_file():
        return False
    target = os.path.realpath(out)
    for given in paths:
        root = os.path.realpath(given)
        if target == root:
            return True
        if os.path.isdir(root) and target.startswith(root.rstrip(os.sep) + os.sep):
            try:
                with out.open("rb") as fh:
                    head = fh.read(SNIFF_BYTES)
            except OSError:
                return False
            return sniff(head) is not None or claims_image(str(out))
    return False


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"--{flag} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class DetectorConfig:
    """What classifying images needs, whatever feeds them.

    Attributes:
        model: an aiscan ONNX model, or a shipped one by name ("default", "fast"); None
            means the shipped default.
        device: "auto", "cpu", "cuda" or "tensorrt".
        decoder: "cpu", "dali" (on the GPU when there is one, else DALI's CPU operators),
            or "auto" (DALI when it is installed and a GPU is present, else "cpu").
        threshold: overrides the model's own threshold when set.
        real_below: overrides the model's own lower band edge (p_ai below it is "real",
            between it and the threshold "uncertain"); never above the threshold.
        batch_size: images per inference call; None: 8 on the CPU, 128 on a GPU.
        workers: decode threads.
        threads: ONNX Runtime intra-op threads (0: as many as cores).
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
        prefetch: batches decoded ahead of inference.
        fetch: fetch a head model's encoder into aiscan's cache when it is not there
            (the only network use of a scan); False, or ``AISCAN_OFFLINE=1``: never, and
            a missing encoder is one line saying how to fetch it.
    """

    model: Path | str | None = "default"
    device: str = "auto"
    decoder: str = "auto"
    threshold: float | None = None
    real_below: float | None = None
    batch_size: int | None = None
    workers: int = field(default_factory=default_threads)
    threads: int = 0
    hash_files: bool = False
    max_pixels: int = DecodeLimits.max_pixels
    max_file_mb: int = DecodeLimits.max_file_bytes // 2**20
    decode_memory_mb: int = DecodeLimits.decode_memory // 2**20
    decode_timeout: float = 60.0
    exact_decode: bool = False
    evidence: bool = True
    evidence_policy: str = "report"
    prefetch: int = 2
    fetch: bool = True

    def __post_init__(self) -> None:
        _choice("device", self.device, DEVICES)
        _choice("decoder", self.decoder, DECODERS)
        if self.decoder == "dali":
            from ..core.dali import dali_available

            if not dali_available():
                raise ConfigError(
                    "--decoder dali needs NVIDIA DALI: pip install 'aiscan-batch[dali]'"
                )
        _choice("evidence-policy", self.evidence_policy, EVIDENCE_POLICIES)
        self._check_ranges()
        if self.evidence_policy == "override" and not self.evidence:
            raise ConfigError("--evidence-policy override needs the evidence (drop --no-evidence)")

    def _check_ranges(self) -> None:
        for name, value, low, high in (
            ("batch-size", 1 if self.batch_size is None else self.batch_size, 1, 4096),
            ("workers", self.workers, 1, 256),
            ("threads", self.threads, 0, 256),
            ("prefetch", self.prefetch, 1, 64),
        ):
            if not low <= value <= high:
                raise ConfigError(f"--{name} must be within {low}..{high}, got {value}")
        for flag, edge in (("threshold", self.threshold), ("real-below", self.real_below)):
            if edge is not None and not 0.0 <= edge <= 1.0:
                raise ConfigError(f"--{flag} must be within [0, 1], got {edge}")
        below, above = self.real_below, self.threshold
        if below is not None and above is not None and below > above:
            raise ConfigError(f"--real-below {below} is above --threshold {above}")
        positive: tuple[tuple[str, float], ...] = (
            ("max-pixels", self.max_pixels),
            ("max-file-size", self.max_file_mb),
            ("decode-memory", self.decode_memory_mb),
            ("decode-timeout", self.decode_timeout),
        )
        for flag, amount in positive:
            if not amount > 0:
                raise ConfigError(f"--{flag} must be positive, got {amount}")

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
    def decode_spec(self) -> DecodeSpec:
        """The decode stage's settings."""
        return DecodeSpec(
            limits=self.limits,
            decoder=self.decoder,
            mode=self.decode_override,
            hash_files=self.hash_files,
            evidence=self.evidence,
            workers=self.workers,
            timeout_s=self.decode_timeout,
            prefetch=self.prefetch,
        )

    def open_model(self) -> OpenModel:
        """The model, opened once (session, threshold, band, batch size).

        A head model's encoder is fetched first when it is not in the cache, unless
        ``fetch`` is False or ``AISCAN_OFFLINE`` is set (then its absence is one line).

        Raises:
            ConfigError, ModelError, DeviceError, EncoderUnavailableError, CacheError.
        """
        if self.fetch and not offline_by_environment():
            fetch_encoder(self.model)
        return OpenModel.open(
            self.model,
            self.device,
            threads=self.threads,
            threshold=self.threshold,
            real_below=self.real_below,
            batch_size=self.batch_size,
            evidence_policy=self.evidence_policy,
        )


@dataclass(frozen=True, kw_only=True)
class ScanConfig(DetectorConfig):
    """Everything one scan of files and folders needs: a :class:`DetectorConfig` and

    Attributes:
        paths: files and folders to scan.
        out: the verdict file to write (:func:`~aiscan.scanner.run.pipeline.scan` needs one;
            :func:`~aiscan.scanner.run.pipeline.iter_verdicts` writes no file).
        fmt: "csv", "jsonl" or "parquet"; None: the one the suffix of ``out`` names
            (:func:`~aiscan.scanner.output.formats.resolve_format`). Resolved here: a
            built config always holds the format it writes.
        resume: continue an interrupted (or finished) scan of the same output.
        mix_models: let a resumed output keep rows that another model (or another
            threshold or band) judged; without it such a resume is refused.
        overwrite: replace an existing output.
        state: SQLite state of earlier runs: scan only what is new or changed, reuse the
            verdicts of identical content, report deleted files
            (:mod:`aiscan.scanner.nightly.state`).
        engine: "local" (this process's threads) or "ray" (Ray Data: decode tasks and
            inference actors on a Ray cluster, :mod:`aiscan.scanner.engines.ray_data`).
        ray_address: the Ray cluster to join (None: a local instance, or RAY_ADDRESS).
        shard: "I/N" keeps only the files of shard I out of N.
    """

    paths: tuple[str, ...]
    out: Path | None = None
    fmt: str | None = None
    resume: bool = False
    mix_models: bool = False
    overwrite: bool = False
    state: Path | None = None
    engine: str = "local"
    ray_address: str | None = None
    shard: str = "0/1"

    def __post_init__(self) -> None:
        if not self.paths:
            raise ConfigError("give at least one file or folder to scan")
        missing = [p for p in self.paths if not os.path.lexists(p)]
        if missing:
            raise ConfigError(f"no such file or folder: {', '.join(missing)}")
        super().__post_init__()
        self._check_output()
        _choice("engine", self.engine, ENGINES)
        if self.engine == "ray":
            self._check_ray()
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
        _parse_shard(self.shard)

    def _check_output(self) -> None:
        out = self.out
        if out is not None and out.is_dir():
            raise ConfigError(f"--out {out} is a folder; give a file name")
        if out is not None and not out.parent.is_dir() and str(out.parent):
            raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
        if out is not None and _is_an_input_image(out, self.paths):
            raise ConfigError(
                f"--out {out} is one of the images to scan: give an output path outside them "
                "(the output would replace it, or its journal would join the tree)"
            )
        if out is not None:
            # the one normalisation of a frozen config: the format it will write
            object.__setattr__(self, "fmt", resolve_format(out, self.fmt))
        elif self.fmt is not None:
            resolve_format(None, self.fmt)
        if self.state is not None and self.state.is_dir():
            raise ConfigError(f"--state {self.state} is a folder; give a database file name")

    def _check_ray(self) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--engine ray needs Ray Data: pip install 'aiscan-batch[ray]'")
        if self.decoder == "dali":
            raise ConfigError(
                "--engine ray decodes on the workers' CPUs; --decoder dali is for the local engine"
            )
        if self.state is not None and self.hash_files:
            raise ConfigError(
                "--engine ray cannot reuse the state's verdicts of identical content "
                "(--state with --sha256): the workers cannot reach the state database; "
                "use the local engine for that run, or drop --sha256"
            )

    @property
    def out_format(self) -> str:
        """The format of the output (or of the rows, without one)."""
        return self.fmt or "csv"

    @property
    def decode_spec(self) -> DecodeSpec:
        spec = super().decode_spec
        if self.engine == "ray":  # the Ray engine decodes on its workers' CPUs
            return dataclasses.replace(spec, decoder="cpu")
        return spec

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
