"""The chunk vectors as one contiguous float32 matrix in memory, for the dense half of search;
from ``INT8_MIN_ROWS`` rows on, also an int8 copy that finds candidates, rescored exactly in float32.

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

__all__ = ["VectorMatrix", "VectorCache", "load_vectors", "INT8_MIN_ROWS"]

# Below this an exact float32 product takes well under a millisecond: no second copy is worth it.
# Above it the int8 pass streams 4x less memory (bench/vectors.py: 0.40x the time of numpy float32
# at 100k rows, 0.24x at 1M, recall@10 1.0 against exact; at 10k torch's call overhead eats the gain).
INT8_MIN_ROWS = 20_000
RESCORE_FACTOR = 8  # int8 candidates per wanted result, rescored exactly (at least RESCORE_MIN)
RESCORE_MIN = 100


@dataclass(frozen=True)
class VectorMatrix:
    ids: "np.ndarray"  # chunk ids, int64, row order
    matrix: "np.ndarray"  # float32 (rows, dim), unit-length rows
    model: str
    position: dict[int, int] = field(repr=False)  # chunk id -> row
    # The int8 copy (rows, per-row scales), made on first use; False: none (too small or no kernel).
    _int8: list = field(default_factory=list, repr=False, compare=False)

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

    def nearest(self, query: "np.ndarray", k: int, *, use_int8: bool | None = None) -> tuple[list[int], "np.ndarray"]:
        """The ``k`` chunk ids most similar to a unit-length ``query``, best first, with their exact
        cosine similarities. ``use_int8``: None picks by size (``INT8_MIN_ROWS``)."""
        import numpy as np

        k = min(k, len(self))
        if k <= 0:
            return [], np.zeros(0, dtype=np.float32)
        if use_int8 is None:
            use_int8 = len(self) >= INT8_MIN_ROWS
        rows = self._int8_candidates(query, max(k * RESCORE_FACTOR, RESCORE_MIN)) if use_int8 else None
        if rows is None:
            sims = self.matrix @ query
            rows = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
            exact = sims[rows]
        else:
            exact = self.matrix[rows] @ query
        order = np.argsort(-exact, kind="stable")[:k]
        return [int(i) for i in self.ids[rows[order]]], exact[order]

    def similarity(self, query: "np.ndarray", chunk_ids: list[int]) -> dict[int, float]:
        """Exact cosine similarity of the given chunks (those in this matrix) with ``query``."""
        known = [cid for cid in chunk_ids if cid in self.position]
        if not known:
            return {}
        sims = self.matrix[[self.position[cid] for cid in known]] @ query
        return {cid: float(s) for cid, s in zip(known, sims)}

    def _int8_candidates(self, query: "np.ndarray", n: int) -> "np.ndarray | None":
        """Rows of the ``n`` best approximate similarities from the int8 copy, or None without one."""
        import numpy as np

        if n >= len(self):
            return None
        if not self._int8:
            self._int8.append(_quantize(self.matrix))
        packed = self._int8[0]
        if packed is None:
            return None
        import torch

        rows8, scales = packed
        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).reshape(1, -1).to(torch.bfloat16)
        approx = torch._weight_int8pack_mm(q, rows8, scales)[0]
        return torch.topk(approx, n, sorted=False).indices.numpy()


def _quantize(matrix: "np.ndarray"):
    """(int8 rows, bfloat16 per-row scales) for torch's int8 matrix-vector kernel, or None when
    this torch has no such kernel, or when torch is not loaded already (then search stays exact
    float32): a process that embeds on llama.cpp keeps torch's 400 MB out for 38 ms a query at 100k
    rows (68 ms exact against 30 ms int8, bench/RESULTS.md row 8)."""
    import sys

    if "torch" not in sys.modules:
        return None
    try:
        import numpy as np
        import torch

        if not hasattr(torch, "_weight_int8pack_mm") or matrix.shape[1] % 32:
            return None
        peak = np.abs(matrix).max(axis=1)
        peak[peak == 0] = 1.0
        rows8 = np.rint(matrix * (127.0 / peak)[:, None]).astype(np.int8)
        packed = (torch.from_numpy(rows8), torch.from_numpy((peak / 127.0).astype(np.float32)).to(torch.bfloat16))
        torch._weight_int8pack_mm(torch.zeros(1, matrix.shape[1], dtype=torch.bfloat16), packed[0][:8], packed[1][:8])
        return packed
    except (ImportError, RuntimeError):
        return None


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
