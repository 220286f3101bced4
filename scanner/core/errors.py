"""TODO docstring."""

from __future__ import annotations

from aiscan.model.errors import AiscanError


class ConfigError(AiscanError, ValueError):
    """The scan cannot start as configured; the message says what to change."""
