"""The exceptions a user can see, each carrying a one-line message and an exit code.

Raised deep in the library; turned into a message and exit code in exactly one place in the CLI.
"""

from __future__ import annotations

__all__ = [
    "EdgeLlamaError",
    "ConfigError",
    "StoreError",
    "ModelError",
    "SourceError",
]


class EdgeLlamaError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_code: int = 1


class ConfigError(EdgeLlamaError):
    """A setting has a bad value, or the config file cannot be parsed."""

    exit_code = 2


class StoreError(EdgeLlamaError):
    """The database cannot be opened, migrated or written."""


class ModelError(EdgeLlamaError):
    """A model file is missing, unreadable, or failed to load."""


class SourceError(EdgeLlamaError):
    """A document cannot be read or turned into text; the indexer records it as skipped."""
