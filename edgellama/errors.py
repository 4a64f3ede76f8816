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
    "RequestError",
    "BusyError",
    "DeadlineError",
    "ClientGoneError",
    "ServiceError",
    "NotIndexedError",
    "DatasetError",
]


class EdgeLlamaError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_code: int = 1
    http_status: int = 500  # what the daemon answers when this reaches a request


class ConfigError(EdgeLlamaError):
    """A setting has a bad value, or the config file cannot be parsed."""

    exit_code = 2
    http_status = 400


class RequestError(EdgeLlamaError):
    """A request to the daemon is malformed or too large."""

    exit_code = 2

    def __init__(self, message: str, *, http_status: int = 400):
        super().__init__(message)
        self.http_status = http_status


class BusyError(EdgeLlamaError):
    """The daemon's queue is full: try again after ``retry_after`` seconds."""

    http_status = 503

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineError(EdgeLlamaError):
    """A request ran past its time limit (``request_seconds``) and was stopped."""

    http_status = 504


class ClientGoneError(EdgeLlamaError):
    """The client hung up while its request ran: the work stops, nobody gets an answer."""

    http_status = 499  # nginx's "client closed request", counted in /metrics


class StoreError(EdgeLlamaError):
    """The database cannot be opened, migrated or written."""


class ModelError(EdgeLlamaError):
    """A model file is missing, unreadable, or failed to load."""


class SourceError(EdgeLlamaError):
    """A document cannot be read or turned into text; the indexer records it as skipped."""


class ServiceError(EdgeLlamaError):
    """The systemd unit cannot be rendered, installed or removed."""


class NotIndexedError(EdgeLlamaError):
    """A path asked about (e.g. to summarize) is not in the index."""

    http_status = 404


class DatasetError(EdgeLlamaError):
    """An evaluation dataset (BEIR folder, QA file) is missing or malformed."""

    exit_code = 2
