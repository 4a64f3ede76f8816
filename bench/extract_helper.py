"""The extraction helper process (sources.IsolatedExtractor) against extracting in-process: the
cost per PDF and HTML file of the hard deadline, and of starting the helper once. Also the
bookkeeping of an event batch: which known documents are gone, by bisection in the sorted known
paths against the former scan of every known path for every changed path."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ._common import ROOT, info, median, report


def _per_file(files: list[tuple[Path, bytes]], extract, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        for path, data in files:
            extract(path, data, max_seconds=60)
        times.append((time.perf_counter() - started) / len(files))
    return median(times)


def run(*, quick: bool) -> None:
    from edgellama.indexer import _keys_under, _under
    from edgellama.sources import IsolatedExtractor, extract

    reps = 3 if quick else 15
    files = [(p, p.read_bytes()) for p in sorted((ROOT / "corpus").rglob("*")) if p.suffix in (".pdf", ".html")]
    small = [(Path("note.html"), b"<p>One short paragraph.</p>")] * 20
    with IsolatedExtractor() as helper:
        started = time.perf_counter()
        helper.extract(*small[0], max_seconds=60)
        start_seconds = time.perf_counter() - started
        for label, batch in (("corpus PDF and HTML", files), ("20-byte HTML", small)):
            inside = _per_file(batch, extract, reps)
            isolated = _per_file(batch, helper.extract, reps)
            info(f"{label}: {isolated * 1000:.2f} ms per file in the helper, {inside * 1000:.2f} ms in-process, "
                 f"{(isolated - inside) * 1000:.2f} ms more; helper start {start_seconds * 1000:.0f} ms")
            report(f"extraction in the helper process ({label})", value=isolated * 1000, unit="ms",
                   baseline_name="in-process", baseline=inside * 1000, ratio=isolated / inside,
                   target="< 1 ms more per file", met=isolated - inside < 0.001, reps=reps,
                   note=f"helper start {start_seconds * 1000:.0f} ms")

    known_count, changed_count = (2_000, 500) if quick else (10_000, 2_000)
    known = sorted(f"/docs/f{i // 100}/n{i:06}.md" for i in range(known_count))
    changed = [f"/docs/f{i // 100}/n{i:06}.md" for i in range(0, known_count, known_count // changed_count)]
    started = time.perf_counter()
    scanned = {p for p in known if _under(p, changed)}
    scan = time.perf_counter() - started
    started = time.perf_counter()
    bisected = {k for c in changed for k in _keys_under(known, c)}
    bisect = time.perf_counter() - started
    assert scanned == bisected
    info(f"{known_count} known documents, {changed_count} changed paths: bisection {bisect * 1000:.2f} ms,"
         f" scan of every known path {scan * 1000:.0f} ms")
    report(f"event batch bookkeeping ({known_count} known x {changed_count} changed)", value=bisect * 1000,
           unit="ms", baseline_name="scan of every known path per changed path", baseline=scan * 1000,
           ratio=bisect / scan, target="< 0.1x", met=bisect < 0.1 * scan, reps=1, note=f"pid {os.getpid()}")
