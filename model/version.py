"""aiscan's version, one place for every package (the distribution's is pyproject.toml's)."""

__version__ = "0.1.0"
