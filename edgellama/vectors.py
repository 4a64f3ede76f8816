"""The chunk vectors as one contiguous float32 matrix in memory, for the dense half of search.

The database stays the source of truth: ``VectorCache`` (the daemon's) keeps one matrix and
reloads it only after some other connection has committed (``PRAGMA data_version``). Never writes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from .store import Store

__all__ = ["VectorMatrix", "VectorCache", "load_vectors"]


@dataclass(frozen=True)
class VectorMatrix:
    ids: "np.ndarray"  # chunk ids, int64, row order
    matrix: "np.ndarray"  # float32 (rows, dim), unit-length rows
    model: str
    position: dict[int, int] = field(repr=False)  # chunk id -> row

    def __len__(self) -> int:
        return len(self.ids)

    def similarities(self, query: "np.ndarray") -> "np.ndarray":
        """Cosine similarity of every row with a unit-length ``query``."""
        return self.matrix @ query

    def top(self, sims: "np.ndarray", k: int) -> list[int]:
        """Chunk ids of the ``k`` highest similarities, best first (argpartition, then a small sort)."""
        import numpy as np

        if k >= len(sims):
            order = np.argsort(-sims)
        else:
            part = np.argpartition(-sims, k)[:k]
            order = part[np.argsort(-sims[part])]
        return [int(i) for i in self.ids[order]]


def load_vectors(store: "Store", *, model: str) -> VectorMatrix:
    import numpy as np

    ids, blobs, dim = store.chunk_vectors(model=model)
    if not ids:
        return VectorMatrix(np.zeros(0, dtype=np.int64), np.zeros((0, dim or 1), dtype=np.float32), model, {})
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim)
    return VectorMatrix(np.asarray(ids, dtype=np.int64), matrix, model, {cid: i for i, cid in enumerate(ids)})


class VectorCache:
    """One matrix shared by every request; reloaded when the database has changed."""

    def __init__(self, db: Path):
        from .store import Store

        self._store = Store.open(db, create=False)  # read-only use: its data_version sees every commit
        self._lock = threading.Lock()
        self._version: int | None = None
        self._matrix: VectorMatrix | None = None
        self.reloads = 0

    def get(self, *, model: str) -> VectorMatrix:
        with self._lock:
            version = self._store.data_version()
            if self._matrix is None or version != self._version or self._matrix.model != model:
                self._matrix = load_vectors(self._store, model=model)
                self._version = version
                self.reloads += 1
            return self._matrix

    def close(self) -> None:
        self._store.close()
