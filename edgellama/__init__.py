"""EdgeLlama: ask your own documents, offline, with cited answers from a small local model."""

__version__ = "0.1.0"
