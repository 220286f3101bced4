"""The one wrapper around ONNX Runtime: provider choice, checks, batched p_ai."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiscan.model.cache import cache_dir
from aiscan.model.errors import AiscanError
from aiscan.model.meta import ModelError, ModelInfo
from aiscan.model.pixels import fixed_batches

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
#: TensorRT optimisation profile: batch sizes an engine is built for (no rebuild between).
TRT_OPT_BATCH, TRT_MAX_BATCH = 128, 512
_TRT = "TensorrtExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_WANTED = {"cpu": _CPU, "cuda": _CUDA, "tensorrt": _TRT}


class DeviceError(AiscanError, RuntimeError):
    """An explicitly requested execution provider is not the one that runs."""


def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports; 0 without a driver (no CUDA import)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def _tensorrt_loadable() -> bool:
    for name in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def provider_plan(
    device: str,
    available: Sequence[str],
    *,
    cuda_devices: int,
    tensorrt_loadable: bool,
    trt_cache_dir: str | None = None,
    fp16: bool = True,
    trt_profile: tuple[str, int, int] | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """The ordered (provider, options) list to ask ONNX Runtime for.

    ``auto`` asks only for what can work on this machine (a GPU provider on a box without
    a GPU only logs errors before ONNX Runtime falls back); an explicit device asks for
    exactly that provider, then CPU, and the caller checks what really ran.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    trt_opts = {
        "trt_fp16_enable": "True" if fp16 else "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": trt_cache_dir or str(cache_dir() / "trt"),
        "trt_timing_cache_enable": "True",
    }
    if trt_profile:  # one engine for every batch size from 1 to TRT_MAX_BATCH
        name, h, w = trt_profile
        for key, n in (("min", 1), ("opt", TRT_OPT_BATCH), ("max", TRT_MAX_BATCH)):
            trt_opts[f"trt_profile_{key}_shapes"] = f"{name}:{n}x3x{h}x{w}"
    plan: list[tuple[str, dict[str, str]]] = []
    if device == "tensorrt" or (device == "auto" and cuda_devices and tensorrt_loadable):
        plan.append((_TRT, trt_opts))
    if device in ("tensorrt", "cuda") or (device == "auto" and cuda_devices):
        plan.append((_CUDA, {}))
    plan.append((_CPU, {}))
    missing = [p for p, _ in plan if p not in available]
    if device != "auto" and missing:
        raise DeviceError(
            f"--device {device} needs {', '.join(missing)}, but this ONNX Runtime build offers "
            f"only {', '.join(available)}"
        )
    return [(p, o) for p, o in plan if p in available]


def _input_profile(path: Path) -> tuple[str, int, int]:
    """Input name and size of a model, read from the file (for TensorRT's profile)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    h, w = ModelInfo.from_onnx(model).preprocessing.input_size
    return model.graph.input[0].name, h, w


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Hold back what native code writes to stderr (ONNX Runtime's provider-loading
    errors, in colour, before aiscan's own one-line message) and hand it over as lines,
    so that the caller can quote the useful one.

    File descriptor 2 belongs to the whole process: while a session is created, what any
    other thread writes to stderr is held back too (and goes to the debug log, as these
    lines do), and two sessions created at once in two threads (a threaded service, Ray
    actors sharing a process) take turns (:data:`_STDERR_SWAP`), so that neither restores
    the other's descriptor."""
    lines: list[str] = []
    with _STDERR_SWAP:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr to capture
            yield lines
            return
        with _swapped_stderr(saved, lines):
            yield lines


#: One swap of file descriptor 2 at a time, process-wide.
_STDERR_SWAP = threading.Lock()


@contextlib.contextmanager
def _swapped_stderr(saved: int, lines: list[str]) -> Iterator[None]:
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = _ANSI.sub("", sink.read().decode("utf-8", "replace"))
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
            for line in lines:
                log.debug("onnxruntime: %s", line)


@dataclass(frozen=True)
class SessionReport:
    """Which providers really run, and why."""

    requested: str
    providers: tuple[str, ...]
    note: str


class Classifier:
    """An aiscan ONNX model, ready to turn normalised batches into p_ai.

    Args:
        model_path: an ONNX file exported by aiscan-export (metadata required).
        device: "auto", "cpu", "cuda" or "tensorrt".
        threads: ONNX Runtime intra-op threads; 0 lets it choose.
        spin: let ONNX Runtime threads spin while idle. Faster alone, but steals cores
            from decode workers running beside it, so off by default.
        trt_cache_dir: where TensorRT engines are cached between runs.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        *,
        threads: int = 0,
        spin: bool = False,
        trt_cache_dir: str | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        plan = provider_plan(
            device,
            ort.get_available_providers(),
            cuda_devices=cuda_device_count() if device == "auto" else 1,
            tensorrt_loadable=_tensorrt_loadable() if device == "auto" else True,
            trt_cache_dir=trt_cache_dir,
        )
        if plan[0][0] == _TRT:
            plan = provider_plan(
                device,
                ort.get_available_providers(),
                cuda_devices=1,
                tensorrt_loadable=True,
                trt_cache_dir=trt_cache_dir,
                trt_profile=_input_profile(path),
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(0, threads)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3 if device == "auto" else 2
        with _captured_stderr() as native_log:
            try:
                self._session = ort.InferenceSession(
                    str(path),
                    sess_options=opts,
                    providers=[p for p, _ in plan],
                    provider_options=[o for _, o in plan],
                )
            except Exception as exc:  # ORT raises its own untyped exceptions on bad files
                raise ModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.report = self._check_providers(device, [p for p, _ in plan], native_log)
        meta = self._session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_metadata(dict(meta))
        self.sha256 = file_sha256(path)
        self.path = path
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self._check_input(inp.shape)

    def _check_providers(
        self, device: str, asked: list[str], native_log: list[str]
    ) -> SessionReport:
        running = tuple(self._session.get_providers())
        if device != "auto" and running[0] != _WANTED[device]:
            cause = next((line for line in native_log if "Failed to load" in line), "")
            cause = cause[cause.find("Failed to load") :]
            raise DeviceError(
                f"--device {device} was requested but ONNX Runtime runs {running[0]} "
                f"(asked for {', '.join(asked)}); check the CUDA/TensorRT libraries and driver"
                + (f"; ONNX Runtime said: {cause}" if cause else "")
            )
        if device == "auto":
            note = f"auto: running on {running[0]}"
            if running[0] != asked[0]:
                note += f" ({asked[0]} was asked for but is not usable here)"
            elif running[0] == _CPU:
                note += " (no usable CUDA device found)"
        else:
            note = f"running on {running[0]} as requested"
        return SessionReport(device, running, note)

    def _check_input(self, shape: Sequence[Any]) -> None:
        h, w = self.info.preprocessing.input_size
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ModelError(f"model input must be NCHW with 3 channels, got shape {list(shape)}")
        dims = [d for d in shape[2:] if isinstance(d, int)]
        if dims and dims != [h, w]:
            raise ModelError(f"model input is {shape[2]}x{shape[3]} but its metadata says {h}x{w}")

    @property
    def model_label(self) -> str:
        """What the CSV's ``model`` column says: id and a short hash of the file."""
        return f"{self.info.model_id}@{self.sha256[:12]}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """p_ai for each image of a float32 NCHW batch (any batch size)."""
        if self._fixed_batch and len(batch) != self._fixed_batch:
            return self._predict_fixed(batch, self._fixed_batch)
        (out,) = self._session.run(None, {self._input_name: batch})[:1]
        return self._p_ai(np.asarray(out, dtype=np.float32))

    @property
    def on_gpu(self) -> bool:
        return self.report.providers[0] in (_TRT, _CUDA)

    def predict_device(self, tensor: Any) -> np.ndarray:
        """p_ai for a float32 NCHW batch already on the GPU (a DALI ``TensorGPU``).

        On a GPU session its memory is bound as the input directly (IO binding): no copy
        through the host. On a CPU session, or for a model with a fixed batch axis that
        the batch does not match, it is copied to the host first.
        """
        if not self.on_gpu:
            return self.predict(np.asarray(tensor.as_cpu()))
        shape = [int(d) for d in tensor.shape()]
        if self._fixed_batch and shape[0] != self._fixed_batch:
            # a fixed batch axis (an int8rr graph takes one image per run)
            # is fed from the host, image by image
            return self.predict(np.asarray(tensor.as_cpu()))
        binding = self._session.io_binding()
        binding.bind_input(self._input_name, "cuda", 0, np.float32, shape, tensor.data_ptr())
        binding.bind_output(self._session.get_outputs()[0].name, "cpu")
        self._session.run_with_iobinding(binding)
        return self._p_ai(np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32))

    def _predict_fixed(self, batch: np.ndarray, size: int) -> np.ndarray:
        parts = []
        for chunk, real in fixed_batches(batch, size):
            (out,) = self._session.run(None, {self._input_name: chunk})[:1]
            parts.append(self._p_ai(np.asarray(out, dtype=np.float32))[:real])
        return np.concatenate(parts)

    def _p_ai(self, out: np.ndarray) -> np.ndarray:
        return self.info.p_ai(out)


def default_batch_size(provider: str) -> int:
    """Images per inference call when none is given.

    On a 2-core CPU, batch 8 ran end to end 5-10% faster than 16 and 20-30% faster than
    32 (``aiscan-bench --sweep``, benchmarks/results): small batches let decoding and
    inference overlap sooner. GPUs want large batches.
    """
    return 8 if provider == _CPU else 128


def default_threads() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
