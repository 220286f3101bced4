"""The error of a configuration that cannot run, raised before any work."""

from __future__ import annotations

from aiscan.model.errors import AiscanError


class ConfigError(AiscanError, ValueError):
    """The scan cannot start as configured; the message says what to change."""
