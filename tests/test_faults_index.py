"""Faults an edge box lives with, tried on the indexing side (issue 18): symlinked folders,
missing, moved and unmounted folders, inotify limits, folders dropped by a reload, a parser stuck
in one PDF page, a stuck indexer under the systemd watchdog, a full disk, a corrupted database,
two indexers on one database, a burst of new files, kill -9 mid-index.

Real files, real ``edgellama serve`` processes with the real models, real SQLite; mounts and
inotify limits in private namespaces (``unshare``), so nothing leaks to the machine. Each test
says which finding of the issue it shows; README's "Reliability" lists them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli
from daemon_harness import Notifications, eventually
from daemon_process import QUICK_FILES, DaemonProcess, call, copy_corpus
from fakes import BagOfWordsEmbedder

from edgellama.indexer import index_paths
from edgellama.store import Store, SummaryRecord

def _can(*argv: str) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_mount_ns = pytest.mark.skipif(not (os.geteuid() == 0 and _can("unshare", "-m", "true")),
                                    reason="needs root and a private mount namespace (unshare -m)")


class Served:
    """One ``edgellama serve`` process (a DaemonProcess) on its own database, folders and socket,
    with systemd's notification socket. ``prefix`` runs it inside a namespace (``unshare -m``);
    ``script`` is a shell line run there first (a mount, a sysctl), then the daemon is exec'd."""

    def __init__(self, root: Path, shared_data: Path, folders: list[Path], *, env: dict | None = None,
                 script: str = "", prefix: tuple[str, ...] = (), db: Path | None = None):
        self.root = root
        runtime = Path(tempfile.mkdtemp(prefix="el-f-"))
        self.notify = Notifications(runtime / "notify")
        self.db = db or root / "daemon.db"
        if script:
            prefix = (*prefix, "sh", "-c", f'{script} exec "$0" "$@"')
        self.daemon = DaemonProcess(env={
            **os.environ,
            "XDG_DATA_HOME": str(shared_data),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_RUNTIME_DIR": str(runtime),
            "EDGELLAMA_DB": str(self.db),
            "EDGELLAMA_SETTLE_SECONDS": "0.3",
            "EDGELLAMA_RECONCILE_SECONDS": "2",
            "NOTIFY_SOCKET": str(self.notify.path),
            "WATCHDOG_USEC": "2000000",
            "PYTHONFAULTHANDLER": "1",
            **(env or {}),
        }, log=root / f"daemon-{time.monotonic_ns()}.log", folders=folders, prefix=prefix)
        self.process, self.socket, self.env = self.daemon.process, self.daemon.socket, self.daemon.env

    def wait_ready(self, timeout: float = 240) -> None:
        self.daemon.wait_ready(timeout=timeout)

    def status(self) -> dict:
        code, body, _ = call(self.socket, "GET", "/status")
        assert code == 200, body
        return body

    def watcher(self) -> dict:
        return self.status()["daemon"]["watcher"]

    def documents(self) -> int:
        return self.status()["documents"]

    def idle_after_a_scan(self, timeout: float = 120) -> dict:
        """The watcher state once a full scan started after now has finished."""
        start = self.watcher()["reconciles"]
        assert eventually(lambda: (w := self.watcher())["reconciles"] >= start + 2 and not w["indexing"]
                          and not w["pending"], timeout=timeout), self.watcher()
        return self.watcher()

    def search(self, query: str) -> list[str]:
        code, body, _ = call(self.socket, "POST", "/search", {"query": query, "k": 5})
        assert code == 200, body
        return [r["path"] for r in body["results"]]

    def read_log(self) -> str:
        return self.daemon.read_log()

    def stop(self) -> None:
        self.daemon.stop()
        self.notify.close()


def _corpus_folder(path: Path, names=QUICK_FILES) -> Path:
    return copy_corpus(path, names)


def _paths(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return sorted(row[0] for row in conn.execute("SELECT path FROM documents"))


def _note(word: str, n: int = 0) -> str:
    return f"# Note {n}\n\nThe {word} ledger number {n} lists {word} crates stored in bay {n % 7}.\n"


# -- one daemon, several folders: findings 1, 2, 5, 6 and the writer lock ------------------------------


@pytest.fixture(scope="module")
def station(tmp_path_factory, shared_data):
    """A daemon watching ``docs``, ``usb`` (to be moved away), ``old`` (to be dropped by a reload)
    and ``late`` (missing at start)."""
    base = tmp_path_factory.mktemp("station")
    folders = {"docs": _corpus_folder(base / "docs"),
               "usb": base / "usb", "old": base / "old", "late": base / "late"}
    folders["usb"].mkdir()
    for i in range(3):
        (folders["usb"] / f"crate-{i}.md").write_text(_note("walrus", i))
    folders["old"].mkdir()
    (folders["old"] / "retired.md").write_text(_note("pelican"))
    config = base / "config" / "edgellama"
    config.mkdir(parents=True)
    (config / "config.toml").write_text("folders = [%s]\n" % ", ".join(json.dumps(str(p)) for p in folders.values()))
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(_note("ocelot"))
    d = Served(base, shared_data, [])
    d.folders, d.outside = folders, outside
    try:
        d.wait_ready()
        assert eventually(lambda: d.documents() == 7, timeout=120), d.status()
        yield d
    finally:
        d.stop()


@pytest.mark.models
def test_a_missing_folder_does_not_stop_the_daemon_and_is_watched_once_it_appears(station):
    """Finding 2: ``serve --folder D --folder /missing`` reaches READY, answers from D, says why it
    cannot watch the missing folder in /status, and watches it once it appears."""
    late = station.folders["late"]
    watcher = station.watcher()
    assert watcher["not_watched"][str(late)].startswith(f"cannot watch {late}: No such file or directory")
    assert str(late) not in watcher["watching"]
    assert any(p.endswith("power.md") for p in station.search("battery bank energy"))
    late.mkdir()
    (late / "arrived.md").write_text(_note("narwhal"))
    assert eventually(lambda: any("arrived.md" in p for p in station.search("narwhal ledger crates")), timeout=60)
    assert eventually(lambda: str(late) in station.watcher()["watching"], timeout=30)
    assert str(late) not in station.watcher()["not_watched"]
    (late / "second.md").write_text(_note("quokka"))  # by its event now
    assert eventually(lambda: any("second.md" in p for p in station.search("quokka ledger crates")), timeout=60)


@pytest.mark.models
def test_a_symlinked_folder_is_entered_neither_by_the_watcher_nor_by_a_scan(station):
    """Finding 1: ``docs/linkdir -> outside`` indexes nothing from outside, whether the watcher
    sees the link made, a file written through it, or a full scan. The database is sampled all
    along: a full scan would remove what an event wrongly indexed, hiding it."""
    docs = station.folders["docs"]
    seen: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                seen.update(p for p in _paths(station.db) if "/linkdir" in p)
            except sqlite3.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        os.symlink(station.outside, docs / "linkdir")
        os.symlink(station.outside, docs / "linkdir.md")  # a folder link with a readable suffix
        (docs / "linkdir" / "written-through.md").write_text(_note("ocelot", 2))
        os.utime(docs / "linkdir" / "secret.md")
        (docs / "marker.md").write_text(_note("marmot"))  # seen after the links' events
        assert eventually(lambda: any("marker.md" in p for p in station.search("marmot ledger crates")), timeout=60)
        station.idle_after_a_scan()
    finally:
        done.set()
        sampler.join()
    assert seen == {str(docs / "linkdir.md")}  # recorded as skipped, with its reason
    skipped = {s["path"]: s["reason"] for s in station.status()["skipped_files"]}
    assert skipped[str(docs / "linkdir.md")] == f"symlink to {station.outside}, outside the indexed folders"
    assert not any("ocelot" in p or "secret" in p for p in station.search("ocelot ledger crates"))
    os.unlink(docs / "linkdir")
    os.unlink(docs / "linkdir.md")


@pytest.mark.models
def test_a_folder_moved_away_keeps_its_documents_and_nothing_is_embedded_again(station):
    """Finding 5: a folder that is gone during a full rescan (an unplugged disk) keeps its
    documents, marked unavailable in /status; back, nothing is re-embedded."""
    usb = station.folders["usb"]
    before = station.documents()
    away = usb.with_name("usb.away")
    usb.rename(away)
    watcher = station.idle_after_a_scan()
    assert station.documents() == before
    assert watcher["unavailable"][str(usb)].startswith("missing")
    assert not any("crate-1.md" in p for p in station.search("walrus ledger crates"))  # never cited while gone
    usb.mkdir()  # an empty mount point
    watcher = station.idle_after_a_scan()
    assert station.documents() == before
    assert watcher["unavailable"][str(usb)].startswith("empty")
    usb.rmdir()
    away.rename(usb)
    watcher = station.idle_after_a_scan()
    assert station.documents() == before and str(usb) not in watcher["unavailable"]
    assert watcher["last_stats"]["chunks_embedded"] == 0 and watcher["last_stats"]["removed"] == 0
    assert any("crate-1.md" in p for p in station.search("walrus ledger crates"))
    (usb / "crate-9.md").write_text(_note("walrus", 9))  # watched again
    assert eventually(lambda: station.documents() == before + 1, timeout=60)


@pytest.mark.models
def test_another_indexer_on_the_same_database_is_refused_naming_the_daemon(station):
    """Low: two writers on one database would prune each other's documents and vectors."""
    other = _corpus_folder(station.root / "other", names=("station/power.md",))
    out = run_cli("index", str(other), env={**station.env, "NOTIFY_SOCKET": "", "WATCHDOG_USEC": ""})
    assert out.returncode == 1, out
    pid = station.status()["daemon"]["pid"]
    assert out.stderr.strip().splitlines() == [
        f"edgellama: error: {station.db} is being indexed by edgellama serve (pid {pid}); one indexer per"
        " database: stop it first, or index through it"]
    assert not any(p.startswith(str(other)) for p in _paths(station.db))


@pytest.mark.models
def test_a_folder_dropped_by_a_reload_is_forgotten(station):
    """Finding 6: after SIGHUP without ``old``, its documents, vectors and summaries are gone."""
    old = station.folders["old"]
    code, _, _ = call(station.socket, "POST", "/summarize", {"path": str(old / "retired.md"), "method": "extract"})
    assert code == 200
    assert any("retired.md" in p for p in station.search("pelican ledger crates"))
    config = station.root / "config" / "edgellama" / "config.toml"
    keep = [p for name, p in station.folders.items() if name != "old"]
    config.write_text("folders = [%s]\n" % ", ".join(json.dumps(str(p)) for p in keep))
    station.process.send_signal(signal.SIGHUP)
    assert eventually(lambda: not any(p.startswith(str(old)) for p in _paths(station.db)), timeout=60), \
        station.watcher()
    assert station.watcher()["purged"] == 1
    assert not any("retired.md" in p for p in station.search("pelican ledger crates"))
    with sqlite3.connect(f"file:{station.db}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT count(*) FROM summaries WHERE path LIKE ?", (f"{old}%",)).fetchone()[0] == 0
    assert str(old) not in station.watcher()["folders"]


# -- in-process: the races and the store -------------------------------------------------------------


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_read_through(tmp_path):
    """Finding 1, the race: the read walks down from the watched folder with O_NOFOLLOW, so a
    folder replaced by a link between the scan and the open is not followed."""
    from edgellama.indexer import _BehindSymlink, _read_regular

    root, outside = tmp_path / "docs", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "a.md").write_text("secret")
    (root / "sub" / "a.md").write_text("fine")
    assert _read_regular(root / "sub" / "a.md", 100, [str(root)])[1] == b"fine"
    shutil.rmtree(root / "sub")
    os.symlink(outside, root / "sub")
    with pytest.raises(_BehindSymlink):
        _read_regular(root / "sub" / "a.md", 100, [str(root)])


def test_a_full_disk_is_reported_as_such_and_the_index_stays_sound(tmp_path):
    """Low: SQLITE_FULL used to be masked by a failing ROLLBACK."""
    from edgellama.errors import StoreError

    root = tmp_path / "docs"
    root.mkdir()
    for i in range(40):
        (root / f"n{i}.md").write_text(_note(f"word{i}", i) * 40)
    with Store.open(tmp_path / "x.db") as store:
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 30}")
        with pytest.raises(StoreError, match="database or disk is full"):
            index_paths(store=store, embedder=BagOfWordsEmbedder(), paths=[root], chunk_tokens=200,
                        chunk_overlap=30, max_file_bytes=10**6)
        assert store.integrity_problems() == []
        store._conn.execute("PRAGMA max_page_count = 1000000")
        stats = index_paths(store=store, embedder=BagOfWordsEmbedder(), paths=[root], chunk_tokens=200,
                            chunk_overlap=30, max_file_bytes=10**6)
        assert store.stats().documents == 40 and stats.removed == 0
        assert store.integrity_problems() == []


def test_summaries_of_deleted_files_are_purged_and_the_wal_is_bounded(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text(_note("heron"))
    (root / "b.md").write_text(_note("ibis"))
    with Store.open(tmp_path / "x.db") as store:
        assert store._conn.execute("PRAGMA journal_size_limit").fetchone()[0] == 64 << 20
        options = dict(store=store, embedder=BagOfWordsEmbedder(), paths=[root], chunk_tokens=200,
                       chunk_overlap=30, max_file_bytes=10**6)
        index_paths(**options)
        for path in ("a.md", "b.md"):
            store.put_summary(SummaryRecord(key=path, level="document", method="extractive", model="",
                                            path=str(root / path), points="[]", model_calls=0))
        store.put_summary(SummaryRecord(key="t", level="topic", method="extractive", model="", path=None,
                                        points="[]", model_calls=0))
        (root / "a.md").unlink()
        assert index_paths(**options).removed == 1
        assert store.summary("a.md") is None and store.summary("t") is None
        assert store.summary("b.md") is not None


def test_an_unlistable_folder_keeps_its_documents(tmp_path, monkeypatch):
    """Finding 5: EIO or EACCES on listing a folder is not an empty folder."""
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.md").write_text(_note("heron"))
    (root / "b.md").write_text(_note("ibis"))
    options = dict(embedder=BagOfWordsEmbedder(), paths=[root], chunk_tokens=200, chunk_overlap=30,
                   max_file_bytes=10**6)
    with Store.open(tmp_path / "x.db") as store:
        assert index_paths(store=store, **options).added == 2
        real_scandir = os.scandir

        def failing(path):
            if str(path) in (str(root), str(root / "sub")):
                raise OSError(5, "Input/output error")
            return real_scandir(path)

        import edgellama.indexer as indexer

        monkeypatch.setattr(indexer.os, "scandir", failing)
        stats = index_paths(store=store, **options)
        assert stats.removed == 0 and store.stats().documents == 2
        assert [(u.path, u.reason) for u in stats.unavailable] == [
            (str(root), "cannot list folder: Input/output error; its documents are kept")]


def _slow_pdf(ops: int) -> bytes:
    """One page whose text takes pypdf about 0.3 ms per operator to extract: a parser busy inside
    a single page, where no check between pages can stop it."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 12 Tf " + b"1 0 0 1 10 10 Tm (ab) Tj " * ops + b"ET")
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_pdf_stuck_inside_one_page_is_stopped_at_its_deadline_in_any_thread(tmp_path):
    """Finding 7: the page-time check cannot interrupt a page; the helper process is killed at
    the deadline, the file is skipped with that reason and the next file is indexed."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a-slow.pdf").write_bytes(_slow_pdf(100_000))  # about 30 s of pypdf
    (root / "b-after.md").write_text(_note("heron"))
    result = []

    def run():
        with Store.open(tmp_path / "x.db") as store:
            result.append(index_paths(store=store, embedder=BagOfWordsEmbedder(), paths=[root], chunk_tokens=200,
                                      chunk_overlap=30, max_file_bytes=10**7, max_extract_seconds=1))

    worker = threading.Thread(target=run)  # not the main thread: no SIGALRM
    worker.start()
    worker.join(timeout=300)
    stats = result[0]
    assert [(Path(s.path).name, s.reason) for s in stats.skipped] == [
        ("a-slow.pdf", "reading took longer than the 1 s limit (max_extract_seconds); the reader was stopped")]
    assert stats.added == 1


# -- a stuck indexer and the systemd watchdog (finding 7) ------------------------------------------------


@pytest.mark.models
def test_a_stuck_indexer_stops_the_watchdog_pings_and_they_resume_when_it_moves_on(tmp_path, shared_data):
    """The indexer waits on the database (another process holds its write lock): the daemon stops
    telling systemd it is alive, so a real hang gets it restarted; pings resume once it moves on."""
    docs = _corpus_folder(tmp_path / "docs", names=("station/power.md",))
    d = Served(tmp_path, shared_data, [docs], env={"EDGELLAMA_MAX_EXTRACT_SECONDS": "1",
                                                     "WATCHDOG_USEC": "1000000",
                                                     "EDGELLAMA_RECONCILE_SECONDS": "600"})
    try:
        d.wait_ready()
        assert eventually(lambda: d.documents() == 1 and not d.watcher()["indexing"], timeout=120)
        assert eventually(lambda: len(d.notify.pings()) > 3, timeout=10)
        holder = sqlite3.connect(d.db, timeout=0)
        holder.execute("BEGIN IMMEDIATE")  # the write lock; readers go on (WAL)
        held = time.monotonic()
        (docs / "blocked.md").write_text(_note("bison"))
        time.sleep(12)
        assert d.documents() == 1  # still answering
        holder.rollback()
        holder.close()
        released = time.monotonic()
        assert eventually(lambda: d.documents() == 2, timeout=60)
        assert eventually(lambda: d.notify.pings(since=released), timeout=30)  # pings resume
        pings = d.notify.pings(since=held)
        gaps = [b - a for a, b in zip([held, *pings], pings)]
        # stall limit here: 1 s deadline + 2 s grace + 2 x WatchdogSec (1 s); systemd would restart us
        assert max(gaps) >= 5, [round(t - held, 2) for t in pings]
    finally:
        d.stop()


# -- namespaces: inotify limits, a full disk, an unmounted disk ------------------------------------------


@pytest.mark.skipif(not _can("unshare", "-Ur", "sh", "-c", "echo 3 > /proc/sys/user/max_inotify_watches"),
                    reason="needs a user namespace whose inotify limits can be set (unshare -Ur)")
@pytest.mark.models
def test_past_the_inotify_limits_a_folder_is_rescanned_instead(tmp_path, shared_data):
    """Finding 2: ENOSPC from inotify (here: 3 watches allowed in a private user namespace) does
    not stop the daemon; the folder is rescanned periodically and /status says so."""
    docs = _corpus_folder(tmp_path / "docs")
    for i in range(6):
        (docs / f"sub{i}").mkdir()
    (docs / "sub3" / "deep.md").write_text(_note("lemur"))
    d = Served(tmp_path, shared_data, [docs], prefix=("unshare", "-Ur"),
               script="echo 3 > /proc/sys/user/max_inotify_watches &&")
    try:
        d.wait_ready()
        assert eventually(lambda: d.documents() == 4, timeout=120), d.status()
        reason = d.watcher()["not_watched"][str(docs)]
        assert reason.startswith(f"cannot watch {docs}: inotify watch limit reached (inotify limits")
        assert reason.endswith("rescanned every 2 s instead")
        (docs / "sub5" / "later.md").write_text(_note("tapir"))
        assert eventually(lambda: d.documents() == 5, timeout=60)
    finally:
        d.stop()


def _nsenter(pid: int, *argv: str) -> None:
    subprocess.run(["nsenter", "-t", str(pid), "-m", *argv], check=True, capture_output=True, timeout=30)


@pytest.mark.models
@needs_mount_ns
def test_a_full_disk_is_reported_and_the_files_are_indexed_once_there_is_room(tmp_path, shared_data):
    """Low + fault suite: the database on a 2 MB filesystem fills up while files arrive; the error
    is reported as SQLite says it, the index stays sound, and the files are indexed once the disk
    has room again (without a restart or a full rescan)."""
    docs = _corpus_folder(tmp_path / "docs", names=("station/power.md",))
    dbdir = tmp_path / "dbfs"
    dbdir.mkdir()
    d = Served(tmp_path, shared_data, [docs], db=dbdir / "daemon.db", prefix=("unshare", "-m"),
               script=f"mount -t tmpfs -o size=2m tmpfs '{dbdir}' &&",
               env={"EDGELLAMA_RECONCILE_SECONDS": "3600"})
    try:
        d.wait_ready()
        assert eventually(lambda: d.documents() == 1, timeout=120)
        for i in range(150):
            (docs / f"log-{i:03}.md").write_text(_note(f"w{i}x", i) * 30)
        assert eventually(lambda: any("database or disk is full" in e for e in d.watcher()["errors"]), timeout=240), \
            d.watcher()
        written = d.documents()
        assert 1 <= written < 151
        _nsenter(d.process.pid, "mount", "-o", "remount,size=256m", str(dbdir))
        assert eventually(lambda: d.documents() == 151, timeout=300), d.watcher()
        with Store.open(Path(f"/proc/{d.process.pid}/root") / str(dbdir).lstrip("/") / "daemon.db",
                        create=False) as store:
            assert store.integrity_problems() == []
    finally:
        d.stop()


@pytest.mark.models
@needs_mount_ns
def test_an_unmounted_disk_keeps_its_documents_and_remounted_nothing_is_embedded_again(tmp_path, shared_data):
    """Fault suite: the watched folder is a mount (a bind mount in the daemon's own namespace):
    unmounted, its mount point is empty, its documents stay; mounted again, the same files are
    unchanged and the folder is watched again."""
    source = _corpus_folder(tmp_path / "disk")
    mnt = tmp_path / "media"
    mnt.mkdir()
    d = Served(tmp_path, shared_data, [mnt], prefix=("unshare", "-m"), script=f"mount --bind '{source}' '{mnt}' &&")
    try:
        d.wait_ready()
        assert eventually(lambda: d.documents() == 3, timeout=120)
        _nsenter(d.process.pid, "umount", "-l", str(mnt))
        watcher = d.idle_after_a_scan()
        assert d.documents() == 3 and watcher["unavailable"][str(mnt)].startswith("empty")
        _nsenter(d.process.pid, "mount", "--bind", str(source), str(mnt))
        watcher = d.idle_after_a_scan()
        assert d.documents() == 3 and str(mnt) not in watcher["unavailable"]
        assert watcher["last_stats"]["chunks_embedded"] == 0
        assert eventually(lambda: str(mnt) in d.watcher()["watching"], timeout=30)
        (source / "new.md").write_text(_note("gecko"))  # an event on the remounted disk
        assert eventually(lambda: d.documents() == 4, timeout=60)
    finally:
        d.stop()


# -- a corrupted database, kill -9, a burst of files -------------------------------------------------------


@pytest.mark.models
def test_a_corrupted_database_is_a_clear_error_and_is_left_as_it_was(tmp_path, shared_data):
    docs = _corpus_folder(tmp_path / "docs", names=("station/power.md",))
    db = tmp_path / "x.db"
    with Store.open(db) as store:
        index_paths(store=store, embedder=BagOfWordsEmbedder(), paths=[docs], chunk_tokens=200, chunk_overlap=30,
                    max_file_bytes=10**6)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
    conn.close()
    data = bytearray(db.read_bytes())
    data[4096 * 2:4096 * 4] = os.urandom(4096 * 2)  # pages 3 and 4: tables the schema still names
    db.write_bytes(bytes(data))
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    env = {"EDGELLAMA_DB": str(db), "XDG_DATA_HOME": str(shared_data)}
    for argv in (["index", str(docs)], ["serve", "--folder", str(docs)]):
        out = run_cli(*argv, env=env, timeout=240)
        assert out.returncode == 1, (argv, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert lines[-1].startswith("edgellama: error: ") and "corrupt" in lines[-1], out.stderr
        assert "Traceback" not in out.stderr
        assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


@pytest.mark.models
def test_kill_9_mid_index_then_restart_loses_nothing(tmp_path, shared_data):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(300):
        (docs / f"n{i:03}.md").write_text(_note(f"k{i}q", i) * 3)
    d = Served(tmp_path, shared_data, [docs], env={"EDGELLAMA_RECONCILE_SECONDS": "3600"})
    try:
        d.wait_ready()
        assert eventually(lambda: 0 < d.documents(), timeout=120)
        d.process.kill()
        d.process.wait()
    finally:
        d.stop()
    killed_at = len(_paths(d.db))
    with Store.open(d.db, create=False) as store:
        assert store.integrity_problems() == []
    again = Served(tmp_path, shared_data, [docs], env={"EDGELLAMA_RECONCILE_SECONDS": "3600"})
    try:
        again.wait_ready()  # the writer lock died with the killed process
        assert eventually(lambda: again.documents() == 300, timeout=300), again.watcher()
        stats = again.watcher()["last_stats"]
        assert stats["added"] == 300 - killed_at or killed_at == 300
    finally:
        again.stop()
    with Store.open(d.db, create=False) as store:
        assert store.integrity_problems() == [] and store.stats().documents == 300


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _burst(tmp_path: Path, shared_data: Path, count: int) -> dict:
    docs = _corpus_folder(tmp_path / "docs", names=("station/power.md",))
    d = Served(tmp_path, shared_data, [docs], env={"EDGELLAMA_RECONCILE_SECONDS": "3600"})
    try:
        d.wait_ready()
        assert eventually(lambda: d.documents() == 1 and not d.watcher()["indexing"], timeout=120)
        rss_before = _rss_mb(d.process.pid)
        staging = tmp_path / "staging"
        staging.mkdir()
        for i in range(count):
            (staging / f"b{i:05}.md").write_text(_note(f"z{i}y", i))
        for path in sorted(staging.iterdir()):  # created at once, as a copy or unpack does
            path.rename(docs / path.name)
        answered, peak = [], rss_before
        while d.documents() < count + 1:
            started = time.monotonic()
            assert any(p.endswith("power.md") for p in d.search("battery bank energy"))
            answered.append(time.monotonic() - started)
            peak = max(peak, _rss_mb(d.process.pid))
            assert d.process.poll() is None
            time.sleep(0.5)
        with Store.open(d.db, create=False) as store:
            assert store.consistency().problems == []
            assert store.stats().documents == count + 1
        return {"answered": len(answered), "slowest_query_s": max(answered, default=0.0),
                "rss_growth_mb": peak - rss_before}
    finally:
        d.stop()


@pytest.mark.models
@pytest.mark.parametrize("count", [1000, pytest.param(10_000, marks=pytest.mark.stress)])
def test_a_burst_of_files_is_indexed_once_while_queries_are_answered(tmp_path, shared_data, count):
    """10,000 files created at once (1,000 in the default run): each indexed once, searches
    answered all along, the daemon's memory bounded."""
    figures = _burst(tmp_path, shared_data, count)
    print(f"burst {count}:", figures)
    assert figures["answered"] >= 1
    assert figures["rss_growth_mb"] < 500, figures
