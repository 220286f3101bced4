"""The core: work on one file or one batch, with no output file, no run and no engine.

Types: :class:`Row` (a verdict, :data:`ROW_SCHEMA` its columns) and :data:`Status`;
:class:`Found` (a discovered path), :class:`Item` (a decoded file), :class:`Batch`.
Stages, in the order a file meets them: :func:`discover`, :func:`sniff`,
:func:`read_evidence`, :class:`CpuDecoder` / :class:`DaliDecoder`, :class:`Classifier`,
then the verdict policy (:class:`RowMaker`, :func:`classify_batch`). :func:`resolve_model`
names the ONNX file a scan runs. It imports nothing from the layers above it.
"""

from .classify import RowMaker, classify_batch
from .dali import DaliDecoder, dali_available, dali_claiming_decoder
from .decode import Batch, Blob, CpuDecoder, Item
from .discovery import Found, discover, in_shard
from .errors import ConfigError
from .evidence import Evidence, read_evidence
from .infer import DEVICES, Classifier, DeviceError, cuda_device_count, default_batch_size
from .models import SHIPPED_MODELS, resolve_model, shipped_model
from .rows import ROW_FIELDS, STATUSES, Row, Status, as_status
from .sniffing import sniff

__all__ = [
    "DEVICES",
    "ROW_FIELDS",
    "SHIPPED_MODELS",
    "STATUSES",
    "Batch",
    "Blob",
    "Classifier",
    "ConfigError",
    "CpuDecoder",
    "DaliDecoder",
    "DeviceError",
    "Evidence",
    "Found",
    "Item",
    "Row",
    "RowMaker",
    "Status",
    "as_status",
    "classify_batch",
    "cuda_device_count",
    "dali_available",
    "dali_claiming_decoder",
    "default_batch_size",
    "discover",
    "in_shard",
    "read_evidence",
    "resolve_model",
    "shipped_model",
    "sniff",
]
