"""Crash safety: ``edgellama index`` killed with SIGKILL at random moments leaves a sound database,
and the next run finishes the job without embedding finished documents again, ending with exactly
the index a clean run builds.

Real parts only: the real CLI in a subprocess, the real embedder, real SQLite files. 20 kills in
the default run; ``./scripts/test -m stress tests/test_crash_safety.py`` kills 100 times.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from edgellama.store import Store

pytestmark = pytest.mark.models

WORDS = (
    "pump valve tank filter battery inverter panel cable relay fuse sensor meter pipe hose seal gasket "
    "bearing motor shaft belt pulley gear spring bolt nut washer bracket frame cover latch hinge lever "
    "north south east west upper lower inner outer weekly monthly daily hourly spare main backup "
    "checks replaces cleans inspects tightens logs measures reports opens closes drains fills"
).split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
    return " ".join(words).capitalize() + f" {rng.randint(1, 999)} units."


def _document(rng: random.Random, n: int, shared: list[str]) -> tuple[str, str]:
    """A file name and its text: a title, a few paragraphs, sometimes a paragraph shared with others."""
    paragraphs = [" ".join(_sentence(rng) for _ in range(rng.randint(2, 7))) for _ in range(rng.randint(1, 5))]
    if rng.random() < 0.2:
        paragraphs.insert(rng.randint(0, len(paragraphs)), rng.choice(shared))
    kind = rng.choice(["md", "md", "txt", "rst", "html"])
    title = f"Station note {n}"
    if kind == "md":
        return f"note{n:04d}.md", f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n"
    if kind == "rst":
        return f"note{n:04d}.rst", f"{title}\n{'=' * len(title)}\n\n" + "\n\n".join(paragraphs) + "\n"
    if kind == "html":
        body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
        return f"note{n:04d}.html", f"<html><head><title>{title}</title></head><body>\n<h1>{title}</h1>\n{body}\n</body></html>\n"
    return f"note{n:04d}.txt", f"{title}\n\n" + "\n\n".join(paragraphs) + "\n"


def make_corpus(root: Path, *, files: int, seed: int) -> None:
    rng = random.Random(seed)
    shared = [" ".join(_sentence(rng) for _ in range(4)) for _ in range(5)]
    for n in range(files):
        name, text = _document(rng, n, shared)
        folder = root / f"area{n % 7}" / ("old" if n % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _env(db: Path) -> dict[str, str]:
    return {**os.environ, "EDGELLAMA_DB": str(db), "PYTHONPATH": str(ROOT)}


def index_cmd(root: Path) -> list[str]:
    return [sys.executable, "-m", "edgellama", "index", "--json", str(root)]


class Watcher:
    """Counts committed documents beside the running indexer, on one open connection (WAL readers
    never wait for the writer)."""

    def __init__(self, db: Path):
        self.db = db
        self.conn: sqlite3.Connection | None = None

    def count(self) -> int:
        if self.conn is None:
            if not self.db.exists():
                return 0
            self.conn = sqlite3.connect(self.db, timeout=5)
        try:
            return self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        except sqlite3.Error:  # not migrated yet
            return 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def check_sound(db: Path) -> dict:
    """Everything a kill could have broken, counted; the caller asserts they are all zero."""
    if not db.exists():
        return {}
    raw = sqlite3.connect(db)
    try:
        integrity = [r[0] for r in raw.execute("PRAGMA integrity_check")]
    finally:
        raw.close()
    assert integrity == ["ok"], integrity
    with Store.open(db) as store:  # also proves a killed database opens (and finishes migrating)
        report = store.consistency()
        assert store.integrity_problems() == [], store.integrity_problems()
        # A document is never half written: its chunks are exactly ordinals 0..n-1.
        gaps = store.db.execute(
            "SELECT count(*) FROM (SELECT document_id, count(*) AS n, max(ordinal) AS top FROM chunks"
            " GROUP BY document_id HAVING top != n - 1)").fetchone()[0]
        empty = store.db.execute(
            "SELECT count(*) FROM documents d WHERE status = 'indexed'"
            " AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id)").fetchone()[0]
    return {**{k: v for k, v in report.__dict__.items() if k != "integrity"}, "gaps": gaps, "empty": empty}


def snapshot(db: Path) -> dict:
    """What must be identical to a clean run: documents, their chunks, and the vectors."""
    with Store.open(db, create=False) as store:
        docs = {path: (d.content_hash, d.status, d.title, d.format) for path, d in store.documents().items()}
        chunks = {path: [(c.ordinal, c.text, c.context, c.text_hash, c.line_start, c.line_end, c.page)
                         for c in store.document_chunks(path)] for path in docs}
        vectors = dict(store.db.execute("SELECT text_hash, vector FROM embeddings").fetchall())
    return {"documents": docs, "chunks": chunks, "vectors": vectors}


def hashes_with_vectors(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with Store.open(db) as store:
        return {r[0] for r in store.db.execute("SELECT text_hash FROM embeddings")}


def kill_at_random_moment(proc: subprocess.Popen, watcher: Watcher, rng: random.Random, startup: float) -> str:
    """SIGKILL the indexer: a quarter of the time at a random time since its start (while it
    imports, loads the model, scans or embeds), else as soon as it has committed a random small
    number of documents (in the middle of its writes). Returns where it was killed."""
    started = time.monotonic()
    if rng.random() < 0.25:
        when = rng.uniform(0, startup)
        while time.monotonic() - started < when and proc.poll() is None:
            time.sleep(0.005)
        moment = f"{when:.1f} s after start"
    else:
        target = watcher.count() + rng.randint(1, 6)
        while proc.poll() is None and watcher.count() < target:
            time.sleep(0.001)
        moment = f"at document {target}"
    if proc.poll() is not None:
        return ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return moment


def edit_files(root: Path, rng: random.Random, n: int, *, more: int = 1) -> None:
    """Between two runs, a user edits one file, deletes one and adds ``more``."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    changed = rng.choice(files)
    changed.write_text(changed.read_text() + f"\n\nAn added paragraph {n}: {_sentence(rng)}\n")
    rng.choice([f for f in files if f != changed]).unlink()
    for i in range(more):
        (root / f"added{n:03d}-{i:02d}.md").write_text(f"# Added {n} {i}\n\n{_sentence(rng)} {_sentence(rng)}\n")


@pytest.mark.parametrize("kills", [20, pytest.param(100, marks=pytest.mark.stress)])
def test_sigkill_at_random_moments_then_resume_equals_a_clean_index(tmp_path, kills):
    began = time.monotonic()
    root = tmp_path / "docs"
    make_corpus(root, files=300, seed=kills)
    rng = random.Random(1000 + kills)
    db = tmp_path / "killed.db"
    moments: list[str] = []
    watcher = Watcher(db)
    startup = 8.0  # refined after the first kill: the time to the first committed document
    rounds = 0
    while len(moments) < kills:
        rounds += 1
        assert rounds <= 2 * kills, f"only {len(moments)} kills in {rounds} runs"
        proc = subprocess.Popen(index_cmd(root), env=_env(db), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, cwd=ROOT)
        started = time.monotonic()
        moment = kill_at_random_moment(proc, watcher, rng, startup)
        err = proc.stderr.read().decode()
        proc.stderr.close()
        if not moment:  # it finished first: fine, and more work for the next run
            assert proc.returncode == 0, err
            edit_files(root, rng, rounds, more=30)
            continue
        if not moments and moment.startswith("at"):
            startup = max(2.0, time.monotonic() - started)
        moments.append(moment)
        watcher.close()
        report = check_sound(db)
        assert not any(report.get(k) for k in report if k != "vectors_without_chunk"), (len(moments), moment, report)
        if len(moments) % 5 == 0:
            edit_files(root, rng, rounds)
    watcher.close()

    # Resume: one uninterrupted run finishes the job.
    before = snapshot(db)["documents"] if db.exists() else {}
    have_vectors = hashes_with_vectors(db)
    resumed = subprocess.run(index_cmd(root), env=_env(db), capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr
    stats = json.loads(resumed.stdout)

    clean_db = tmp_path / "clean.db"
    clean = subprocess.run(index_cmd(root), env=_env(clean_db), capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert clean.returncode == 0, clean.stderr
    clean_stats = json.loads(clean.stdout)

    got, want = snapshot(db), snapshot(clean_db)
    assert sorted(got["documents"]) == sorted(want["documents"])
    assert got["documents"] == want["documents"]
    assert got["chunks"] == want["chunks"]
    assert sorted(got["vectors"]) == sorted(want["vectors"])  # no orphan vector left, none missing
    for text_hash, blob in want["vectors"].items():
        # Batches differ between the runs (padding), so the floats differ in the last bits (under
        # bfloat16 autocast, in the third decimal): the same text must give the same direction.
        a, b = np.frombuffer(got["vectors"][text_hash], dtype=np.float32), np.frombuffer(blob, dtype=np.float32)
        assert float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b)) > 0.999, text_hash
    report = check_sound(db)
    assert not any(report.values()), report

    # No finished document was read or embedded again: the resumed run embedded exactly the chunk
    # texts the killed runs had not committed, and left every finished, unedited document alone.
    finished = {p for p, d in before.items() if d[1] == "indexed" and want["documents"].get(p) == d}
    assert stats["unchanged"] == len(finished)
    assert stats["added"] + stats["changed"] == clean_stats["added"] - len(finished)
    assert stats["chunks_embedded"] == len(set(want["vectors"]) - have_vectors)
    assert stats["chunks_embedded"] < clean_stats["chunks_embedded"]

    elapsed = time.monotonic() - began
    print(f"\n{kills} kills in {rounds} runs, {elapsed:.0f} s; resume embedded {stats['chunks_embedded']} of "
          f"{clean_stats['chunks_embedded']} chunk texts, {stats['unchanged']} of {clean_stats['added']} documents "
          f"were already finished; kill moments: {moments}")
