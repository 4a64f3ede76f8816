"""Hostile and odd input: a folder of bad files of many kinds beside good ones. Each bad file is
indexed correctly or skipped with a clear reason that ``edgellama status --errors`` shows; the
index run neither crashes nor hangs, its peak memory stays under a set limit, and every good file
is indexed. The real CLI, the real embedder, real files, FIFOs, devices and symlinks.
"""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import CORPUS, ROOT
from edgellama.indexer import index_paths
from edgellama.store import Store
from fakes import BagOfWordsEmbedder

MAX_FILE_MB = 20  # the test's per-file size limit: the 200 MB file is over it, the 10 MB line under
RSS_BUDGET_MB = 400  # peak RSS of the hostile run may exceed the good-files-only run by at most this
IS_ROOT = os.geteuid() == 0
PDF = CORPUS / "station" / "generator-log.pdf"


@dataclass(frozen=True)
class Expect:
    """``indexed``: the file's text is searchable (``phrase`` in its chunks); ``skipped``: recorded
    with a reason containing ``reason``; ``either``: one of those two; ``absent``: no record at all."""

    outcome: str
    reason: str = ""
    phrase: str = ""


def _pdf_bytes() -> bytes:
    return PDF.read_bytes()


def _encrypted_pdf(path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(PDF))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    with open(path, "wb") as fh:
        writer.write(fh)


def _scanned_pdf(path: Path) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(3):
        writer.add_blank_page(width=612, height=792)  # pages with no text layer, as a scan has
    with open(path, "wb") as fh:
        writer.write(fh)


def make_deep(root: Path, depth: int) -> Path:
    folder = root
    for _ in range(depth):  # one level at a time: mkdir(parents=True) recurses
        folder = folder / "d"
        folder.mkdir()
    return folder


def remove_deep(root: Path, depth: int) -> None:
    """shutil.rmtree recurses, and 1,200 levels is past Python's recursion limit: go bottom-up."""
    chain = [root.joinpath(*["d"] * n) for n in range(1, depth + 1)]
    for folder in reversed(chain):
        for entry in os.listdir(folder):
            if entry != "d":
                os.unlink(folder / entry)
        os.rmdir(folder)


DEEP = 1200  # Python 3.11's os.walk recurses; this is past its recursion limit


def build_hostile(root: Path, outside: Path) -> dict[bytes, Expect]:
    """The bad files, keyed by their path relative to ``root`` as bytes (some names are not UTF-8)."""
    rng = random.Random(6)
    kinds: dict[bytes, Expect] = {}

    def put(name: str | bytes, data: bytes, expect: Expect) -> None:
        path = os.path.join(os.fsencode(root), os.fsencode(name))
        with open(path, "wb") as fh:
            fh.write(data)
        kinds[os.fsencode(name)] = expect

    put("empty.txt", b"", Expect("skipped", "empty file"))
    put("elf.txt", b"\x7fELF\x02\x01\x01\x00" + bytes(rng.randrange(256) for _ in range(4000)), Expect("skipped", "binary"))
    put("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(rng.randrange(256) for _ in range(4000)),
        Expect("skipped", "binary"))
    put("random.txt", bytes(rng.randrange(256) for _ in range(65536)), Expect("skipped", "binary"))
    put("controls.md", bytes(rng.choice(b"\x01\x02\x03\x04abc ") for _ in range(8000)), Expect("skipped", "binary"))
    with open(root / "huge.txt", "wb") as fh:  # 200 MB of real text
        line = b"The huge file repeats this line about the north pump over and over again.\n"
        block = line * ((1 << 20) // len(line) + 1)
        while fh.tell() < 200 * 10**6:
            fh.write(block)
    kinds[b"huge.txt"] = Expect("skipped", "larger than the 20 MB limit")
    phrase = b"the quick brown fox jumps over the lazy dog near the gamma relay "
    put("oneline.txt", phrase * (10 * 10**6 // len(phrase)), Expect("indexed", phrase="gamma relay"))
    put("blob.txt", b"QUJDREVG" * 125_000, Expect("indexed", phrase="QUJDREVG"))  # 1 MB without a space
    put("invalid-utf8.md", "# Bad bytes\n\nThe café kettle in the Größe room holds 3 litres, déjà vu.".encode()
        + b" Bad: \xff\xc3(\n", Expect("indexed", phrase="café kettle in the Größe room holds 3 litres, déjà vu"))
    put("utf16.txt", "Die Größe des Tanks beträgt 900 Liter.\n".encode("utf-16"), Expect("indexed", phrase="Größe des Tanks"))
    put("latin1.txt", "Le réservoir d'eau fait 800 litres, à côté du garage.\n".encode("latin-1"),
        Expect("indexed", phrase="réservoir d'eau fait 800 litres"))
    put("crlf-bom.md", "\ufeff# Windows\r\n\r\nThe windows note says the hatch sticks.\r\n".encode(),
        Expect("indexed", phrase="hatch sticks"))
    put("truncated.pdf", _pdf_bytes()[: len(_pdf_bytes()) // 3], Expect("either", "PDF"))
    _encrypted_pdf(root / "encrypted.pdf")
    kinds[b"encrypted.pdf"] = Expect("skipped", "encrypted PDF")
    _scanned_pdf(root / "scanned.pdf")
    kinds[b"scanned.pdf"] = Expect("skipped", "no text layer")
    put("not-a.pdf", b"just words in a file with the wrong name\n", Expect("skipped", "not a PDF"))
    put("bomb.html", b"<html><body>" + b"<div><span>" * 100_000 + b"The deepest div hides the blue key."
        + b"</span></div>" * 100_000 + b"</body></html>", Expect("indexed", phrase="deepest div hides the blue key"))
    put("unclosed.html", b"<html><body><p>Unclosed tags everywhere <b><i><table><tr><td>the cellar lamp" * 2000,
        Expect("indexed", phrase="cellar lamp"))
    with zipfile.ZipFile(root / "archive.md", "w") as zf:
        zf.writestr("inner.txt", "zipped words " * 1000)
    kinds[b"archive.md"] = Expect("skipped", "binary")
    os.symlink("loop-b.md", root / "loop-a.md")
    os.symlink("loop-a.md", root / "loop-b.md")
    kinds[b"loop-a.md"] = kinds[b"loop-b.md"] = Expect("skipped", "symlink loop")
    os.symlink(".", root / "here")  # a folder link to itself: never entered
    os.symlink("missing-target.md", root / "broken.md")
    kinds[b"broken.md"] = Expect("skipped", "broken symlink")
    (outside / "secret.md").write_text("# Secret\n\nThe outside secret must not be indexed.\n")
    os.symlink(outside / "secret.md", root / "outside.md")
    kinds[b"outside.md"] = Expect("skipped", "outside the indexed folders")
    os.symlink("good00.md", root / "inside-link.md")  # inside the root: indexed like its target
    kinds[b"inside-link.md"] = Expect("indexed", phrase="unit 0")
    put("locked.md", b"# Locked\n\nThe locked note names the orange valve.\n",
        Expect("either", "Permission denied", "orange valve") if IS_ROOT else Expect("skipped", "Permission denied"))
    os.chmod(root / "locked.md", 0)
    (root / "locked-folder").mkdir()
    (root / "locked-folder" / "inner.md").write_text("# Inner\n\nBehind a locked folder.\n")
    os.chmod(root / "locked-folder", 0)
    kinds[b"locked-folder"] = Expect("absent" if IS_ROOT else "skipped", "cannot list folder")
    put("new\nline.md", b"# Newline\n\nA file name with a newline in it.\n", Expect("indexed", phrase="newline in it"))
    put(b"bad-\xff\xfe-name.md", b"# Bad name\n\nThe name of this file is not UTF-8.\n",
        Expect("indexed", phrase="not UTF-8"))
    put("größe notizen.md", "# Notizen\n\nUnicode name with spaces works.\n".encode(), Expect("indexed", phrase="Unicode name"))
    deep = make_deep(root, DEEP)
    (deep / "bottom.md").write_text("# Bottom\n\nThe bottom of the deep folders.\n")
    kinds[os.fsencode(os.path.relpath(deep / "bottom.md", root))] = Expect("indexed", phrase="bottom of the deep")
    os.mkfifo(root / "pipe.txt")
    kinds[b"pipe.txt"] = Expect("skipped", "FIFO")
    try:
        os.mknod(root / "zero.txt", 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
        kinds[b"zero.txt"] = Expect("skipped", "character device")
    except PermissionError:
        pass  # no CAP_MKNOD here; the kinds count below still has to reach 25
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "socket.md"))
    server.close()
    kinds[b"socket.md"] = Expect("skipped", "socket")
    return kinds


def good_files(root: Path, n: int = 20) -> dict[bytes, Expect]:
    out = {}
    for i in range(n):
        (root / f"good{i:02d}.md").write_text(f"# Good {i}\n\nThe good note number unit {i} says pump {i} runs.\n")
        out[f"good{i:02d}.md".encode()] = Expect("indexed", phrase=f"unit {i}")
    return out


def run_measured(args: list[str], env: dict, timeout: float) -> tuple[int, str, str, float]:
    """Run a command; return its exit code, output and peak RSS in MB (from wait4, this child only)."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
               for s, b in ((proc.stdout, out), (proc.stderr, err))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{args} hung for {timeout} s")
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join(timeout=30)
    return proc.returncode, out[0].decode(), err[0].decode(), usage.ru_maxrss / 1024


@pytest.mark.models
def test_a_folder_of_hostile_files(tmp_path):
    good_root, root, outside = tmp_path / "good", tmp_path / "hostile", tmp_path / "outside"
    for folder in (good_root, root, outside):
        folder.mkdir()
    good_files(good_root)
    expected = {**good_files(root)}
    try:
        expected.update(build_hostile(root, outside))
        bad_kinds = {name for name, e in expected.items() if not name.startswith(b"good")}
        assert len(bad_kinds) >= 25, len(bad_kinds)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGELLAMA_MAX_FILE_MB": str(MAX_FILE_MB)}
        base_rc, _, base_err, base_rss = run_measured(
            [sys.executable, "-m", "edgellama", "index", "--json", str(good_root)],
            {**env, "EDGELLAMA_DB": str(tmp_path / "good.db")}, timeout=900)
        assert base_rc == 0, base_err
        env["EDGELLAMA_DB"] = str(tmp_path / "hostile.db")
        started = time.monotonic()
        rc, out, err, rss = run_measured([sys.executable, "-m", "edgellama", "index", "--json", str(root)],
                                         env, timeout=1800)
        seconds = time.monotonic() - started
        assert rc == 0, err
        assert "Traceback" not in err, err
        print(f"\nhostile index: {len(bad_kinds)} bad kinds, {seconds:.0f} s, peak RSS {rss:.0f} MB "
              f"(good files only: {base_rss:.0f} MB)")
        assert rss < base_rss + RSS_BUDGET_MB, (rss, base_rss)
        stats = json.loads(out)
        reasons = {os.fsencode(s["path"]): s["reason"] for s in stats["skipped"]}

        status = subprocess.run([sys.executable, "-m", "edgellama", "status", "--errors", "--no-daemon"],
                                env=env, capture_output=True, cwd=ROOT, timeout=300)
        assert status.returncode == 0, status.stderr
        shown = status.stdout.decode("utf-8", "replace")

        def key(name: bytes) -> str:  # how the index stores a path (bad bytes as \xNN)
            return (os.fsencode(root) + b"/" + name).decode("utf-8", "backslashreplace")

        with Store.open(Path(env["EDGELLAMA_DB"]), create=False) as store:
            docs = store.documents()
            assert store.integrity_problems() == []
            for name, expect in expected.items():
                doc = docs.get(key(name))
                where = f"{name!r}: {doc}"
                if expect.outcome == "absent":
                    assert doc is None, where
                    continue
                assert doc is not None, f"{name!r} has no record"
                outcome = "indexed" if doc.status == "indexed" else "skipped"
                assert expect.outcome in (outcome, "either"), where
                if outcome == "skipped":
                    assert expect.reason in doc.error, where
                    assert doc.error == reasons[os.fsencode(key(name))]
                    assert f"skipped {key(name)}: {doc.error}" in shown, f"status --errors does not show {where}"
                else:
                    text = " ".join(c.text for c in store.document_chunks(key(name)))
                    assert expect.phrase in text, where
            # Nothing outside the root, and nothing from the folder link's loop, was indexed.
            assert not [p for p in docs if "secret" in p or "/here/" in p]
            assert not any("outside secret" in c.text for p in docs for c in store.document_chunks(p))
        print("skip reasons: " + "; ".join(f"{os.path.relpath(n, os.fsencode(root)).decode(errors='replace')}: {r}"
                                           for n, r in sorted(reasons.items())))
    finally:
        os.chmod(root / "locked-folder", 0o755)
        remove_deep(root, DEEP)


@pytest.mark.models
def test_a_file_deleted_between_scan_and_read_and_one_growing_while_read(tmp_path, embedder):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("# A\n\nThe first file.\n")
    (root / "b-deleted.md").write_text("# B\n\nDeleted before it is read.\n")
    (root / "c-growing.md").write_text("# C\n\nGrowing line 0.\n")
    (root / "d.md").write_text("# D\n\nThe last file.\n")
    stop = threading.Event()

    def grow() -> None:
        n = 0
        with open(root / "c-growing.md", "a") as fh:
            while not stop.is_set():
                n += 1
                fh.write(f"Growing line {n}.\n")
                fh.flush()
                time.sleep(0.0005)

    writer = threading.Thread(target=grow, daemon=True)

    def progress(p) -> None:
        if p.path.endswith("a.md"):  # the scan is over; b and c are read next
            (root / "b-deleted.md").unlink()
            writer.start()

    with Store.open(tmp_path / "x.db") as store:
        first = index_paths(store=store, embedder=embedder, paths=[root], chunk_tokens=200, chunk_overlap=30,
                            max_file_bytes=10**7, on_progress=progress)
        stop.set()
        writer.join()
        assert first.vanished == 1
        docs = store.documents()
        assert str(root / "b-deleted.md") not in docs  # gone: neither indexed nor skipped
        growing = docs[str(root / "c-growing.md")]
        assert growing.status == "indexed" or "kept changing" in growing.error, growing
        assert {str(root / "a.md"), str(root / "d.md")} <= set(docs)
        second = index_paths(store=store, embedder=embedder, paths=[root], chunk_tokens=200, chunk_overlap=30,
                             max_file_bytes=10**7)
        assert second.skipped == ()
        final = (root / "c-growing.md").read_text().strip().splitlines()[-1]
        text = "\n".join(c.text for c in store.document_chunks(str(root / "c-growing.md")))
        assert text.endswith(final)  # after the second run the index holds the whole file
        assert store.integrity_problems() == []


AS_NOBODY = """
import json, os, sys
from pathlib import Path
from edgellama.embed import load_embedder
from edgellama.indexer import index_paths
from edgellama.store import Store

embedder = load_embedder(None, threads=2)
embedder.embed(["warm up"])  # every import and the model are loaded before privileges are dropped
base = Path(sys.argv[1])
if os.geteuid() == 0:
    import pwd

    nobody = pwd.getpwnam("nobody")
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
with Store.open(base / "x.db") as store:
    stats = index_paths(store=store, embedder=embedder, paths=[base / "docs"], chunk_tokens=200,
                        chunk_overlap=30, max_file_bytes=10**6)
print(json.dumps({"uid": os.geteuid(), "added": stats.added,
                  "skipped": {os.path.basename(s.path): s.reason for s in stats.skipped}}))
"""


@pytest.mark.models
def test_an_unreadable_file_is_skipped_for_an_unprivileged_user(tmp_path):
    """chmod 000 means nothing to root, so when the tests run as root the indexer drops to nobody
    (after loading Python and the model, which live where nobody may not look)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="el-nobody-"))
    try:
        base.chmod(0o755)
        docs = base / "docs"
        docs.mkdir()
        (docs / "open.md").write_text("# Open\n\nAnyone may read the open note.\n")
        (docs / "locked.md").write_text("# Locked\n\nNobody may read this.\n")
        (docs / "locked.md").chmod(0)
        (docs / "sealed").mkdir()
        (docs / "sealed" / "inner.md").write_text("inner")
        (docs / "sealed").chmod(0)
        result = subprocess.run([sys.executable, "-c", AS_NOBODY, str(base)], capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=900)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["uid"] != 0
        assert report["skipped"] == {"locked.md": "cannot read: Permission denied",
                                     "sealed": "cannot list folder: Permission denied"}
        assert report["added"] == 1
    finally:
        (base / "docs" / "sealed").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def _index(root: Path, db: Path, **limits):
    with Store.open(db) as store:
        return index_paths(store=store, embedder=BagOfWordsEmbedder(), paths=[root], chunk_tokens=200,
                           chunk_overlap=30, max_file_bytes=10**7, **limits)


def test_the_time_limit_is_checked_between_pdf_pages_in_any_thread(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "log.pdf").write_bytes(_pdf_bytes())
    (root / "ok.md").write_text("# Fine\n\nA quick file.\n")
    result = []
    worker = threading.Thread(target=lambda: result.append(_index(root, tmp_path / "x.db", max_extract_seconds=1e-9)))
    worker.start()  # not the main thread: no SIGALRM, the cooperative checks must do it
    worker.join(timeout=300)
    stats = result[0]
    reasons = {os.path.basename(s.path): s.reason for s in stats.skipped}
    assert reasons["log.pdf"] == "reading took longer than the 1e-09 s limit (max_extract_seconds); stopped before page 1 of 3"
    assert reasons["ok.md"] == "reading took longer than the 1e-09 s limit (max_extract_seconds)"  # checked after chunking
    assert stats.added == 0
    assert _index(root, tmp_path / "y.db").added == 2  # the default limit is ample


def test_sigalrm_stops_a_parser_stuck_inside_one_call(tmp_path, monkeypatch):
    import edgellama.indexer as indexer

    def stuck(path, data, **kw):
        if path.name == "stuck.md":
            while True:  # a parser looping in one page, never reaching a cooperative check
                pass
        from edgellama.sources import extract

        return extract(path, data, **kw)

    monkeypatch.setattr(indexer, "extract", stuck)
    root = tmp_path / "docs"
    root.mkdir()
    (root / "stuck.md").write_text("# Stuck\n\nThis one hangs the parser.\n")
    (root / "zz-after.md").write_text("# After\n\nThe next file is still indexed.\n")
    stats = _index(root, tmp_path / "x.db", max_extract_seconds=0.5)
    assert [(os.path.basename(s.path), s.reason) for s in stats.skipped] == [
        ("stuck.md", "reading took longer than the 0.5 s limit (max_extract_seconds)")]
    assert stats.added == 1


def test_a_fifo_swapped_in_after_the_scan_is_not_opened_for_blocking_reads(tmp_path):
    from edgellama.indexer import _NotRegular, _read_regular

    os.mkfifo(tmp_path / "pipe.txt")  # no writer: a blocking open would wait forever
    with pytest.raises(_NotRegular, match="FIFO"):
        _read_regular(tmp_path / "pipe.txt", 1000)


def test_a_symlink_out_of_the_watched_folders_is_skipped_when_indexed_alone(tmp_path):
    """The watcher indexes single files: the link is judged against its folders, not itself."""
    root, outside = tmp_path / "docs", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nOutside.\n")
    os.symlink(outside / "secret.md", root / "link.md")
    with Store.open(tmp_path / "x.db") as store:
        stats = index_paths(store=store, embedder=BagOfWordsEmbedder(), paths=[root / "link.md"], chunk_tokens=200,
                            chunk_overlap=30, max_file_bytes=10**6, within=[root])
    assert [s.reason for s in stats.skipped] == [f"symlink to {outside / 'secret.md'}, outside the indexed folders"]
