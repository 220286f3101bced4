"""The one step of a scan that may use the network: fetching the encoder a head model
needs into aiscan's cache, before the scan's layers below run (they never fetch: see
:func:`aiscan.scanner.core.models.resolve_model`)."""

from __future__ import annotations

import os
from pathlib import Path

from aiscan.model.clip import encoder_file, encoder_path

from ..core.models import model_file, needs_encoder

#: Set to 1 to forbid every fetch (as ``aiscan --offline`` does).
OFFLINE_ENV = "AISCAN_OFFLINE"


def offline_by_environment() -> bool:
    """True when ``AISCAN_OFFLINE`` is set to a true value (1, true, yes)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def encoder_to_fetch(model: str | os.PathLike[str] | None) -> Path | None:
    """Where the encoder that ``model`` needs would go, when it needs one that is not in
    the cache yet; None otherwise (a whole model, or the encoder is there)."""
    if not needs_encoder(model_file(model)):
        return None
    target = encoder_file()
    return None if target.is_file() else target


def fetch_encoder(model: str | os.PathLike[str] | None, progress: bool = False) -> None:
    """Fetch (once, verified) the encoder that ``model`` needs, if it needs one.

    Raises:
        ConfigError: no such model.
        EncoderUnavailableError: the fetch failed (one line saying why and what to do).
        CacheError: the cache cannot be written.
    """
    if needs_encoder(model_file(model)):
        encoder_path(fetch=True, progress=progress)
