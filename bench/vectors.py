"""Vector top-10 over 10k, 100k and 1M synthetic 384-dim unit vectors (clustered like real
embeddings), against numpy brute force in float32 (``matrix @ q``, argpartition, sort).
Targets: the exact float32 path <= 1.0x; int8 candidates + float32 rescoring <= 0.5x with
recall@10 >= 0.99 against exact. Each query is timed on all three paths in turn; medians."""

from __future__ import annotations

import time

from ._common import info, median, report

DIM = 384


def synthetic(rows: int, *, seed: int = 0):
    """Unit vectors around 1 cluster centre per 100 rows, as topics cluster in a real index."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, rows // 100), DIM), dtype=np.float32)
    matrix = centres[rng.integers(0, len(centres), rows)]
    matrix += 0.6 * rng.standard_normal((rows, DIM), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    queries = centres[rng.integers(0, len(centres), 40)] + 0.6 * rng.standard_normal((40, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return matrix, queries


def brute_force(matrix, query, k: int):
    import numpy as np

    sims = matrix @ query
    part = np.argpartition(-sims, k)[:k]
    return part[np.argsort(-sims[part])]


def run(*, quick: bool) -> None:
    import numpy as np

    from edgellama.vectors import VectorMatrix

    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    n_queries = 10 if quick else 40
    for rows in sizes:
        matrix, queries = synthetic(rows)
        ids = np.arange(rows, dtype=np.int64) + 1
        vm = VectorMatrix(ids, matrix, "synthetic", {})
        started = time.perf_counter()
        vm.nearest(queries[0], 10, use_int8=True)  # builds the int8 copy once (the daemon: per reload)
        build = time.perf_counter() - started
        base_t, f32_t, i8_t, recalls = [], [], [], []
        for q in queries[:n_queries]:
            t = time.perf_counter()
            exact = brute_force(matrix, q, 10)
            base_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            vm.nearest(q, 10, use_int8=False)
            f32_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            got, _ = vm.nearest(q, 10, use_int8=True)
            i8_t.append(time.perf_counter() - t)
            recalls.append(len(set(got) & {int(i) + 1 for i in exact}) / 10)
        base, f32, i8 = median(base_t), median(f32_t), median(i8_t)
        recall = float(np.mean(recalls))
        label = f"{rows // 1000}k" if rows < 1_000_000 else f"{rows // 1_000_000}M"
        info(f"{label}: int8 copy built in {build:.2f} s ({rows * DIM / 1e6:.0f} MB beside "
             f"{rows * DIM * 4 / 1e6:.0f} MB float32); recall@10 {recall:.3f} (min {min(recalls):.1f})")
        report(f"vector top-10 float32 exact, {label}", value=f32 * 1000, unit="ms",
               baseline_name="numpy brute force float32", baseline=base * 1000, ratio=f32 / base,
               target="<= 1.0x", met=f32 / base <= 1.0, reps=len(f32_t))
        report(f"vector top-10 int8 + rescoring, {label}", value=i8 * 1000, unit="ms",
               baseline_name="numpy brute force float32", baseline=base * 1000, ratio=i8 / base,
               target="<= 0.5x, recall@10 >= 0.99", met=i8 / base <= 0.5 and recall >= 0.99, reps=len(i8_t),
               note=f"recall@10 {recall:.3f}")
        del matrix, vm
