"""Engines, on top of the core: they turn found files into rows, batch by batch.

Both take one frozen :class:`EngineSpec` (the model opened once, the decode settings, the
known verdicts) and yield :class:`BatchResult` (rows in input order, and how many reused a
known verdict) from ``run(files)``; the consumer alone counts. :class:`LocalEngine` runs
this process's threads (:mod:`.pool`); :class:`~.ray_data.RayEngine` runs Ray Data tasks and
actors (imported on use: Ray is an extra).
"""

from .local import LocalEngine, decode_stages
from .pool import DaemonPool, Task
from .spec import BatchResult, DecodeSpec, Engine, EngineSpec

__all__ = [
    "BatchResult",
    "DaemonPool",
    "DecodeSpec",
    "Engine",
    "EngineSpec",
    "LocalEngine",
    "Task",
    "decode_stages",
]
