"""Index bundles for a fleet: ``export_bundle`` writes a consistent snapshot of the database with a
manifest; ``import_bundle`` checks one (integrity, SHA-256, embedding model, chunking), moves its
roots and swaps it in atomically, so an edge box does not embed the same files again.

Owns the bundle's layout and its checks. SQL stays in store.py; models are hashed, never loaded.

A bundle is a folder: ``manifest.json`` and ``edgellama.db`` (one self-contained SQLite file).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import EdgeLlamaError
from .store import SCHEMA_VERSION, Store, snapshot_database

__all__ = ["ModelIdentity", "Chunking", "Manifest", "ExportReport", "ImportReport", "model_identity",
           "configured_model", "configured_chunking",
           "export_bundle", "import_bundle", "read_manifest", "parse_root_map", "BundleError"]

BUNDLE_FORMAT = "edgellama-bundle"
FORMAT_VERSION = 1
DB_NAME = "edgellama.db"
MANIFEST_NAME = "manifest.json"


class BundleError(EdgeLlamaError):
    """A bundle cannot be written, or is damaged, or does not fit this box; nothing was replaced."""


@dataclass(frozen=True)
class ModelIdentity:
    """The embedding model vectors were made with: the name they are stored under and the SHA-256 of
    the files that decide them (weights, tokenizer, configs)."""

    name: str
    sha256: str


@dataclass(frozen=True)
class Chunking:
    """The settings that decide chunk texts, hence their hashes: equal settings, equal chunks."""

    chunk_tokens: int
    chunk_overlap: int


@dataclass(frozen=True)
class Manifest:
    format: str
    format_version: int
    created_at: str
    schema_version: int
    embedding_model: ModelIdentity
    chunking: Chunking
    roots: tuple[str, ...]  # the folders the stored (absolute) paths lie under; import --root OLD=NEW moves them
    counts: dict[str, int]  # documents, skipped, chunks, embeddings, summaries
    database: dict[str, Any]  # file, bytes, sha256

    def as_dict(self) -> dict:
        return {**asdict(self), "roots": list(self.roots)}

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        return cls(format=data["format"], format_version=int(data["format_version"]), created_at=data["created_at"],
                   schema_version=int(data["schema_version"]),
                   embedding_model=ModelIdentity(**data["embedding_model"]), chunking=Chunking(**data["chunking"]),
                   roots=tuple(data["roots"]), counts={k: int(v) for k, v in data["counts"].items()},
                   database=dict(data["database"]))


@dataclass(frozen=True)
class ExportReport:
    bundle: Path
    manifest: Manifest
    seconds: float


@dataclass(frozen=True)
class ImportReport:
    db: Path
    manifest: Manifest
    moved: tuple[tuple[str, str, int], ...]  # (old root, new root, documents moved)
    roots: tuple[str, ...]  # the roots after the move
    replaced_documents: int  # documents the database held before
    seconds: float


def _feed(digest, path: Path) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    _feed(digest, path)
    return digest.hexdigest()


def model_identity(folder: Path, *, name: str) -> ModelIdentity:
    """Hash every file of a model folder but its README and hidden files, with their relative names,
    in a fixed order: the same model on any box gives the same hash."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(folder).rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                   and not p.name.lower().startswith("readme"))
    if not files:
        raise BundleError(f"embedding model folder {folder} holds no files")
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        _feed(digest, path)
        digest.update(b"\0")
    return ModelIdentity(name=name, sha256=digest.hexdigest())


def configured_model(settings) -> ModelIdentity:
    """The identity of the embedder ``settings`` configure (hashed from its files, not loaded)."""
    from .embed import embedder_source

    name, folder = embedder_source(settings.embed_model)
    return model_identity(folder, name=name)


def configured_chunking(settings) -> Chunking:
    return Chunking(chunk_tokens=settings.chunk_tokens, chunk_overlap=settings.chunk_overlap)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def bundle_roots(paths: Sequence[str], *, folders: Sequence[str] = ()) -> tuple[str, ...]:
    """The folders the stored paths lie under: each watched folder that holds some, then the common
    folder of the rest (the folder a file was indexed from, at least). Keys that are not paths (an
    evaluation's records, ``beir:ID``) have no root."""
    paths = [p for p in paths if os.path.isabs(p)]
    roots = [f for f in (os.path.abspath(f) for f in folders) if any(_under(p, f) for p in paths)]
    rest = [p for p in paths if not any(_under(p, r) for r in roots)]
    if rest:
        common = os.path.commonpath(rest)
        roots.append(os.path.dirname(common) if common in rest else common)
    return tuple(roots)


def export_bundle(*, db: Path, bundle: Path, model: ModelIdentity, chunking: Chunking,
                  folders: Sequence[str] = ()) -> ExportReport:
    """Write ``bundle`` (a new folder) from the database ``db``, which a daemon may be writing: the
    snapshot is read in one transaction. The folder appears complete or not at all."""
    started = time.perf_counter()
    bundle = Path(bundle)
    if bundle.exists():
        raise BundleError(f"{bundle} already exists: choose a new bundle name")
    partial = bundle.with_name(f".{bundle.name}.partial-{os.getpid()}")
    try:
        partial.mkdir(parents=True)
    except OSError as err:
        raise BundleError(f"cannot create {bundle}: {err.strerror or err}") from None
    try:
        target = partial / DB_NAME
        snapshot_database(Path(db), target)
        with Store.open_readonly(target) as snap:
            problems = snap.consistency().problems
            if problems:
                raise BundleError(f"the index is not sound, not exporting it: {'; '.join(problems[:3])}")
            stats = snap.stats()
            models = snap.embedding_models()
            documents = list(snap.documents())
            summaries = snap.summary_count()
            version = snap.schema_version()
        if stats.chunks and model.name not in models:
            raise BundleError(f"the index holds vectors of {', '.join(models) or 'no model'}, not of the configured "
                              f"embedder {model.name}: set embed_model to the one it was built with")
        manifest = Manifest(
            format=BUNDLE_FORMAT, format_version=FORMAT_VERSION,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), schema_version=version,
            embedding_model=model, chunking=chunking, roots=bundle_roots(documents, folders=folders),
            counts={"documents": stats.documents, "skipped": stats.skipped, "chunks": stats.chunks,
                    "embeddings": stats.embeddings, "summaries": summaries},
            database={"file": DB_NAME, "bytes": target.stat().st_size, "sha256": _sha256_file(target)},
        )
        (partial / MANIFEST_NAME).write_text(json.dumps(manifest.as_dict(), indent=2) + "\n")
        os.rename(partial, bundle)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return ExportReport(bundle=bundle, manifest=manifest, seconds=time.perf_counter() - started)


def read_manifest(bundle: Path) -> Manifest:
    path = Path(bundle) / MANIFEST_NAME
    if not Path(bundle).is_dir():
        raise BundleError(f"{bundle} is not a bundle folder (made by 'edgellama export')")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{bundle} has no {MANIFEST_NAME}: not a bundle made by 'edgellama export'") from None
    except (OSError, ValueError) as err:
        raise BundleError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not an EdgeLlama bundle manifest")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(f"{bundle} is bundle format {data['format_version']}, newer than this EdgeLlama "
                          f"reads ({FORMAT_VERSION})")
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{path} is incomplete or malformed: {err}") from None


def parse_root_map(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``OLD=NEW`` strings -> (absolute old, absolute new); a usage error when malformed."""
    from .errors import ConfigError

    out = []
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ConfigError(f"--root expects OLD=NEW (two folders), got {value!r}")
        out.append((os.path.normpath(old.strip()), os.path.abspath(new.strip())))
    return tuple(out)


def _check_fits(manifest: Manifest, *, model: ModelIdentity, chunking: Chunking) -> None:
    theirs, ours = manifest.embedding_model, model
    if theirs.name != ours.name or theirs.sha256 != ours.sha256:
        raise BundleError(f"the bundle was embedded with {theirs.name} (sha256 {theirs.sha256[:12]}), this box uses "
                          f"{ours.name} (sha256 {ours.sha256[:12]}): its vectors would not match; nothing imported")
    if manifest.chunking != chunking:
        raise BundleError(f"the bundle was chunked with chunk_tokens {manifest.chunking.chunk_tokens}, chunk_overlap "
                          f"{manifest.chunking.chunk_overlap}; this box uses {chunking.chunk_tokens}, "
                          f"{chunking.chunk_overlap}: set them to match; nothing imported")
    if manifest.schema_version > SCHEMA_VERSION:
        raise BundleError(f"the bundle has schema version {manifest.schema_version}, newer than this EdgeLlama "
                          f"({SCHEMA_VERSION}); nothing imported")


def import_bundle(*, bundle: Path, db: Path, model: ModelIdentity, chunking: Chunking,
                  root_map: Sequence[tuple[str, str]] = ()) -> ImportReport:
    """Check ``bundle`` and make ``db`` its copy, roots moved by ``root_map`` ((old, new) pairs).
    Every check runs on a staging copy before ``db`` is touched; the swap is one SQLite write
    transaction, so a daemon reading ``db`` sees the old index or the new one, never a mix."""
    started = time.perf_counter()
    manifest = read_manifest(bundle)
    _check_fits(manifest, model=model, chunking=chunking)
    source = Path(bundle) / manifest.database.get("file", DB_NAME)
    if not source.is_file():
        raise BundleError(f"{bundle} lacks its database {source.name}")
    if _sha256_file(source) != manifest.database.get("sha256"):
        raise BundleError(f"{source} does not match the SHA-256 in its manifest (damaged or changed in transit); "
                          "nothing imported")
    db = Path(db)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BundleError(f"cannot create {db.parent}: {err.strerror or err}") from None
    staging = db.with_name(f".{db.name}.import-{os.getpid()}")
    _remove_database(staging)
    try:
        snapshot_database(source, staging)
        moved = []
        with Store.open(staging, create=False) as stage:  # migrates a bundle of an older schema
            problems = stage.integrity_problems()
            if problems:
                raise BundleError(f"the bundle's database is not sound: {'; '.join(problems[:3])}; nothing imported")
            models = stage.embedding_models()
            if stage.stats().chunks and model.name not in models:
                raise BundleError(f"the bundle's database holds vectors of {', '.join(models) or 'no model'}, "
                                  f"not {model.name} as its manifest says; nothing imported")
            roots = list(manifest.roots)
            for old, new in root_map:
                count = stage.remap_root(old, new)
                if not count:
                    raise BundleError(f"no indexed path lies under {old}; the bundle's roots are "
                                      f"{', '.join(manifest.roots) or '(none)'}; nothing imported")
                moved.append((old, new, count))
                roots = [new + r[len(old.rstrip('/')):] if _under(r, old) else r for r in roots]
            with Store.open(db, create=True) as target:
                before = target.stats().documents
                target.replace_with(stage)
    finally:
        _remove_database(staging)
    return ImportReport(db=db, manifest=manifest, moved=tuple(moved), roots=tuple(roots), replaced_documents=before,
                        seconds=time.perf_counter() - started)


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
