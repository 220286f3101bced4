"""What every engine takes and gives: one frozen spec in, batch results out."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aiscan.model.pixels import DecodeLimits

from ..core.classify import OpenModel
from ..core.discovery import Found
from ..core.rows import Row


@dataclass(frozen=True)
class DecodeSpec:
    """How files become pixels.

    Attributes:
        limits: pixel, file size and decode memory limits.
        decoder: "auto" (DALI on a GPU when both are there), "cpu" or "dali".
        mode: a decode mode forced on the model's own ("full": the reference path, never
            DALI); None: the model's own.
        hash_files: compute each file's sha256.
        evidence: read provenance metadata.
        workers: decode threads (the local engine's; Ray's come from its cluster).
        timeout_s: seconds one file may take to decode before it becomes an error row.
        prefetch: batches decoded ahead of inference.
    """

    limits: DecodeLimits = field(default_factory=DecodeLimits)
    decoder: str = "auto"
    mode: str | None = None
    hash_files: bool = False
    evidence: bool = True
    workers: int = 1
    timeout_s: float = 60.0
    prefetch: int = 2


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine needs, built once before any file is read.

    Attributes:
        model: the model, opened once (session, threshold, band, batch size).
        decode: the decode stage's settings.
        known: sha256 -> p_ai of identical content judged before by this model (a state
            run with hashing); None: every ok image goes through the model.
    """

    model: OpenModel
    decode: DecodeSpec
    known: Callable[[str], float | None] | None = None


class Engine(Protocol):
    """What the run needs of an engine: its name (as the summary reports it), how many
    batches its batch decoder gave up on, and its rows, batch by batch, in input order."""

    @property
    def name(self) -> str: ...

    @property
    def failed_batches(self) -> int: ...

    def run(self, files: Iterable[Found]) -> Generator[BatchResult, None, None]: ...


@dataclass(frozen=True)
class BatchResult:
    """One batch of rows, in input order, and how many of them reused a known verdict."""

    rows: list[Row]
    reused: int = 0
