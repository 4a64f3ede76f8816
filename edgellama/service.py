"""Install the daemon as a systemd service: render the unit templates shipped as package data in
``edgellama/units/`` with this machine's paths, write them with the config, enable them;
``uninstall`` removes exactly what install wrote.

Never starts the daemon, never touches the index; systemctl is only asked what works without a
running manager (enable/disable) unless one answers (daemon-reload, stop).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .config import config_file_path, data_dir, resolve_settings
from .errors import EdgeLlamaError, ServiceError

__all__ = ["UNIT_NAME", "CLIENT_GROUP", "ServiceReport", "daemon_command", "render_unit", "install", "uninstall"]

UNIT_NAME = "edgellama.service"
CLIENT_GROUP = "edgellama-clients"  # the system unit's Group=: local users in it may use the socket
# The unit templates are package data, so an installed (non-editable) package has them too.
TEMPLATES = Path(__file__).resolve().parent / "units"
# A source checkout's README, named in the unit's Documentation= when it is there (an installed
# package keeps the template's /usr/share/doc path).
CHECKOUT_README = Path(__file__).resolve().parent.parent / "README.md"
# What the system unit hides (ProtectHome=tmpfs, PrivateTmp=yes): code or documents living there
# must be bound into the sandbox explicitly.
HIDDEN_PREFIXES = (Path("/home"), Path("/root"), Path("/run/user"), Path("/tmp"), Path("/var/tmp"))


@dataclass(frozen=True)
class ServiceReport:
    """What an install or uninstall did (or, with ``dry_run``, would do)."""

    action: str  # "install" or "uninstall"
    scope: str  # "system" or "user"
    unit: Path  # where the unit lives on disk
    unit_text: str  # the rendered unit ("" for uninstall)
    written: tuple[Path, ...]  # files written (install) or removed (uninstall)
    kept: tuple[Path, ...]  # files left alone, each with a note saying why
    commands: tuple[str, ...]  # commands run (or planned)
    notes: tuple[str, ...]
    dry_run: bool


@dataclass(frozen=True)
class _Layout:
    user: bool
    root: Path
    unit: Path  # absolute paths as systemd sees them; on disk under root
    config: Path
    sysusers: Path | None
    manifest: Path

    @property
    def scope(self) -> str:
        return "user" if self.user else "system"

    def disk(self, path: Path) -> Path:
        return self.root / path.relative_to("/") if self.root != Path("/") else path


def _layout(*, user: bool, root: Path | None) -> _Layout:
    if user:
        if root is not None:
            raise ServiceError("--root is for the system unit; a user unit goes to $XDG_CONFIG_HOME/systemd/user")
        config = config_file_path()
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return _Layout(user=True, root=Path("/"), unit=config_home / "systemd" / "user" / UNIT_NAME, config=config,
                       sysusers=None, manifest=config.parent / "service-manifest.json")
    root = Path(root or "/").resolve()
    return _Layout(user=False, root=root, unit=Path("/etc/systemd/system") / UNIT_NAME,
                   config=Path("/etc/edgellama/config.toml"), sysusers=Path("/etc/sysusers.d/edgellama.conf"),
                   manifest=Path("/etc/edgellama/install-manifest.json"))


# -- rendering ------------------------------------------------------------------------------------


def daemon_command() -> tuple[list[str], Path | None]:
    """The command that runs this very ``edgellama``: the venv's console script when a plain
    interpreter imports the same package, else ``python -m edgellama`` plus the PYTHONPATH it needs."""
    import edgellama

    package = Path(edgellama.__file__).resolve().parent
    script = Path(sys.prefix) / "bin" / "edgellama"
    probe = subprocess.run([sys.executable, "-I", "-c", "import edgellama; print(edgellama.__file__)"],
                           capture_output=True, text=True, cwd="/", timeout=60)
    found = Path(probe.stdout.strip()).resolve().parent if probe.returncode == 0 and probe.stdout.strip() else None
    if found == package and script.is_file() and os.access(script, os.X_OK):
        return [str(script)], None
    return [sys.executable, "-m", "edgellama"], None if found == package else package.parent


def _quote(value: str) -> str:
    """One word of a unit file: '%' escaped for specifiers, quoted when it holds blanks or quotes."""
    if any(c in value for c in "\n\r"):
        raise ServiceError(f"a value for the unit cannot contain a newline: {value!r}")
    value = value.replace("%", "%%")
    if any(c in value for c in " \t\"'\\;"):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _path_word(path: Path, prefix: str = "") -> str:
    """A path for BindReadOnlyPaths=/ReadWritePaths=, where ':' would separate source and target."""
    if ":" in str(path):
        raise ServiceError(f"a folder for the unit cannot contain ':': {path}")
    return _quote(prefix + str(path))


def _hidden(path: Path) -> bool:
    return any(path == p or path.is_relative_to(p) for p in HIDDEN_PREFIXES)


def _code_paths(command: Sequence[str], pythonpath: Path | None) -> list[Path]:
    """Where the interpreter, the venv and the package live, if the system unit would hide them."""
    candidates = [Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(command[0])).parent.parent,
                  Path(__file__).resolve().parent.parent]  # the package itself (an editable install's checkout)
    if pythonpath is not None:
        candidates.append(pythonpath)
    chosen: list[Path] = []
    for path in sorted({p.resolve() for p in candidates if _hidden(p.resolve())}, key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(c) for c in chosen):
            chosen.append(path)
    return chosen


def render_unit(*, user: bool, folders: Sequence[Path], command: Sequence[str], pythonpath: Path | None = None,
                data_home: Path | None = None, config_home: Path | None = None,
                writable: Sequence[Path] = ()) -> str:
    """The shipped unit with ExecStart, the watched folders and (user unit) the data paths filled in.

    Each watched folder becomes ``BindReadOnlyPaths=-FOLDER``: visible (read-only) inside the
    sandbox even under a home, and a missing one (an unplugged disk) does not stop the service.
    """
    template = TEMPLATES / ("edgellama-user.service" if user else UNIT_NAME)
    try:
        lines = template.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ServiceError(f"cannot read the unit template {template}: {err.strerror or err}") from None
    exec_start = "ExecStart=" + " ".join(_quote(arg) for arg in command) + " serve"
    binds = ["# A watched folder, read-only (from `edgellama service install --folder`)."]
    binds += [f"BindReadOnlyPaths={_path_word(f, '-')}" for f in folders]
    if not user:
        code = _code_paths(command, pythonpath)
        if code:
            binds += ["# The interpreter, venv or package, which ProtectHome=/PrivateTmp= would hide."]
            binds += [f"BindReadOnlyPaths={_path_word(p)}" for p in code]
    if len(binds) == 1:
        binds = []
    out: list[str] = ["# Rendered by `edgellama service install` from edgellama/units/" + template.name + "."]
    seen = set()
    for line in lines:
        key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
        if key == "ExecStart":
            line = exec_start
            seen.add(key)
        elif key == "Documentation" and CHECKOUT_README.is_file():
            line = "Documentation=" + _quote(CHECKOUT_README.as_uri())
        elif key == "ProtectHome":
            out.append(line)
            out.extend(binds)
            seen.add(key)
            continue
        elif user and key == "ReadWritePaths":
            out.append("ReadWritePaths=" + " ".join(_path_word(p, "-") for p in writable))
            seen.add(key)
            continue
        elif user and key == "Environment" and line.startswith("Environment=XDG_DATA_HOME="):
            env = [f"XDG_DATA_HOME={data_home}", f"XDG_CONFIG_HOME={config_home}"]
            if os.environ.get("EDGELLAMA_CONFIG"):
                env.append(f"EDGELLAMA_CONFIG={config_file_path()}")
            line = "Environment=" + " ".join(_quote(e) for e in env)
            seen.add("XDG")
        elif key == "Environment" and "PYTHONUNBUFFERED=1" in line and pythonpath is not None:
            out.append(line)
            out.append("# The edgellama package is imported from this checkout, not from the venv.")
            out.append("Environment=" + _quote(f"PYTHONPATH={pythonpath}"))
            continue
        out.append(line)
    missing = {"ExecStart", "ProtectHome"} | ({"ReadWritePaths", "XDG"} if user else set())
    if missing - seen:
        raise ServiceError(f"the unit template {template} lacks {', '.join(sorted(missing - seen))}")
    return "\n".join(out) + "\n"


def _config_text(folders: Sequence[Path]) -> str:
    listed = ", ".join(json.dumps(str(f), ensure_ascii=False) for f in folders)
    return ("# EdgeLlama daemon settings, written by `edgellama service install`.\n"
            "# Any key `edgellama config` lists may go here; `systemctl reload edgellama` applies\n"
            "# folders and limits without reloading the models.\n"
            f"folders = [{listed}]\n")


# -- install / uninstall ---------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(layout: _Layout) -> dict | None:
    path = layout.disk(layout.manifest)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ServiceError(f"cannot read the install manifest {path}: {err}") from None


def _manager_running(user: bool) -> bool:
    """Is there a systemd manager to talk to (not just files to edit)?"""
    if user:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        return bool(runtime) and (Path(runtime) / "systemd" / "private").exists()
    return Path("/run/systemd/system").is_dir()  # sd_booted(): systemd is PID 1


def _systemctl(layout: _Layout, *args: str) -> list[str]:
    scope = ["--user"] if layout.user else ([f"--root={layout.root}"] if layout.root != Path("/") else [])
    return ["systemctl", *scope, *args]


def _run(argv: list[str], *, check: bool = True) -> str | None:
    """Run one command; its failure is a ServiceError (check) or a note (returned)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except OSError as err:
        message = f"cannot run {argv[0]}: {err.strerror or err}"
    else:
        if done.returncode == 0:
            return None
        text = (done.stderr or done.stdout).strip().splitlines()
        message = f"`{' '.join(argv)}` failed: {text[-1] if text else f'exit {done.returncode}'}"
    if check:
        raise ServiceError(message)
    return message


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _folders(given: Sequence[Path]) -> tuple[Path, ...]:
    folders = []
    for folder in given:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise ServiceError(f"folder to watch {folder} is not a directory")
        if path not in folders:
            folders.append(path)
    return tuple(folders)


def _config_plan(layout: _Layout, manifest: dict, chosen: tuple[Path, ...]) -> tuple[tuple[Path, ...], str | None]:
    """The folders to watch and the config text to write (None: keep the file). The config is ours
    to rewrite while nobody edited it since install; anyone else's is only read."""
    config_disk = layout.disk(layout.config)
    if not config_disk.exists():
        return chosen, _config_text(chosen)
    ours = manifest.get("files", {}).get(str(layout.config)) == _sha(config_disk.read_bytes())
    try:
        current = resolve_settings(env={"EDGELLAMA_CONFIG": str(config_disk), "HOME": str(Path.home())}).folders
    except EdgeLlamaError as err:
        raise ServiceError(f"the existing config {config_disk} is invalid: {err}") from None
    if not chosen or chosen == tuple(current):
        return tuple(current), None
    if not ours:
        raise ServiceError(f"{config_disk} exists with other folders; edit its 'folders' or drop --folder")
    return chosen, _config_text(chosen)


def install(*, user: bool = False, folders: Sequence[Path] = (), root: Path | None = None,
            dry_run: bool = False) -> ServiceReport:
    """Write the unit, the config (folders) and, for the system unit, the sysusers.d line of the
    client group; enable the unit. Running it again updates what it wrote."""
    layout = _layout(user=user, root=root)
    real = layout.root == Path("/")
    if not dry_run:
        if not user and real and os.geteuid() != 0:
            raise ServiceError("installing the system service needs root (try sudo); --user installs a user service")
        if shutil.which("systemctl") is None:
            raise ServiceError("systemctl is not installed: this machine cannot run a systemd service")
    manifest = _read_manifest(layout) or {}
    if manifest and manifest.get("scope") != layout.scope:
        raise ServiceError(f"{layout.disk(layout.manifest)} belongs to a {manifest.get('scope')} install")
    unit_disk = layout.disk(layout.unit)
    notes: list[str] = []
    if unit_disk.exists():
        if str(layout.unit) not in manifest.get("files", {}):
            raise ServiceError(f"{unit_disk} exists and was not written by `edgellama service install`; remove it first")
        if _sha(unit_disk.read_bytes()) != manifest["files"][str(layout.unit)]:
            notes.append(f"replaced {unit_disk}, edited since install; keep local changes in "
                         f"`systemctl{' --user' if user else ''} edit edgellama` instead")

    chosen, config_text = _config_plan(layout, manifest, _folders(folders))
    if not chosen:
        notes.append("no folder to watch yet: run install again with --folder DIR")

    command, pythonpath = daemon_command()
    if user:
        settings = resolve_settings()
        writable = list(dict.fromkeys([settings.data_dir, settings.db.parent]))
        unit_text = render_unit(user=True, folders=chosen, command=command, pythonpath=pythonpath,
                                data_home=settings.data_dir.parent, config_home=layout.unit.parents[2],
                                writable=writable)
    else:
        writable = []
        unit_text = render_unit(user=False, folders=chosen, command=command, pythonpath=pythonpath)

    files: dict[Path, str] = {layout.unit: unit_text}
    if config_text is not None:
        files[layout.config] = config_text
    if layout.sysusers is not None:
        files[layout.sysusers] = (f"# The group whose members may use EdgeLlama's socket (Group= of {UNIT_NAME}).\n"
                                  f"g {CLIENT_GROUP} -\n")
    commands: list[list[str]] = []
    group_created = bool(manifest.get("group_created"))
    if not user and real and not _group_exists(CLIENT_GROUP):
        commands.append(["systemd-sysusers", str(layout.sysusers)])
        group_created = True
    if _manager_running(user) and real:
        commands.append(_systemctl(layout, "daemon-reload"))
    elif real:
        notes.append(f"no systemd {'user ' if user else ''}manager is running here (systemd is not PID 1 "
                     "or no user session): the unit is enabled and starts at the next boot/login")
    commands.append(_systemctl(layout, "enable", UNIT_NAME))
    if not user:
        notes.append(f"members of the group {CLIENT_GROUP} may use /run/edgellama/edgellama.sock: "
                     f"usermod -aG {CLIENT_GROUP} USER (then log in again)")
    shown = tuple(" ".join(c) for c in commands)
    report_files = tuple(layout.disk(p) for p in files) + ((layout.disk(layout.manifest),) if not dry_run else ())
    if dry_run:
        return ServiceReport(action="install", scope=layout.scope, unit=unit_disk, unit_text=unit_text,
                             written=tuple(layout.disk(p) for p in files), kept=(), commands=shown,
                             notes=tuple(notes), dry_run=True)

    created_dirs = list(manifest.get("dirs", []))
    hashes = dict(manifest.get("files", {}))
    needed = [layout.disk(p).parent for p in [*files, layout.manifest]] + list(writable)
    for folder in dict.fromkeys(needed):
        missing = [p for p in [folder, *folder.parents] if not p.exists()]
        for directory in reversed(missing):
            directory.mkdir(mode=0o700 if user else 0o755)
            created_dirs.append(str(directory))
    for path, text in files.items():
        target = layout.disk(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, target)
        hashes[str(path)] = _sha(text.encode())
    record = {"scope": layout.scope, "files": hashes, "dirs": created_dirs, "group_created": group_created,
              "enabled": True}
    manifest_disk = layout.disk(layout.manifest)
    manifest_disk.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    # `systemctl enable` makes the .wants folder if needed: it is ours to remove then.
    wants = unit_disk.parent / ("default.target.wants" if user else "multi-user.target.wants")
    wants_existed = wants.exists()
    for argv in commands:
        note = _run(argv, check=argv[-1] == UNIT_NAME or argv[0] == "systemd-sysusers")
        if note:
            notes.append(note)
    if not wants_existed and wants.exists():
        record["dirs"].append(str(wants))
        manifest_disk.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return ServiceReport(action="install", scope=layout.scope, unit=unit_disk, unit_text=unit_text,
                         written=report_files, kept=(), commands=shown, notes=tuple(notes), dry_run=False)


def uninstall(*, user: bool = False, root: Path | None = None, dry_run: bool = False) -> ServiceReport:
    """Disable the unit and remove exactly the files install wrote (those edited since are kept and
    named), the folders it created if empty, and the client group if install made it. The index
    (the daemon's data) is never removed."""
    layout = _layout(user=user, root=root)
    real = layout.root == Path("/")
    manifest = _read_manifest(layout)
    if manifest is None:
        raise ServiceError(f"nothing to uninstall: no {layout.disk(layout.manifest)} "
                           f"(written by `edgellama service install{' --user' if user else ''}`)")
    if manifest.get("scope") != layout.scope:
        raise ServiceError(f"{layout.disk(layout.manifest)} belongs to a {manifest.get('scope')} install")
    if not dry_run and not user and real and os.geteuid() != 0:
        raise ServiceError("removing the system service needs root (try sudo)")
    commands: list[list[str]] = []
    running = real and _manager_running(user)
    if manifest.get("enabled"):
        commands.append(_systemctl(layout, "disable", *(["--now"] if running else []), UNIT_NAME))
    removed: list[Path] = []
    kept: list[Path] = []
    notes: list[str] = []
    for name, digest in manifest.get("files", {}).items():
        target = layout.disk(Path(name))
        if not target.exists():
            continue
        if _sha(target.read_bytes()) == digest:
            removed.append(target)
        else:
            kept.append(target)
            notes.append(f"kept {target}: changed since install")
    if manifest.get("group_created") and real and not user:
        commands.append(["groupdel", CLIENT_GROUP])
    if running:
        commands.append(_systemctl(layout, "daemon-reload"))
    data = "/var/lib/private/edgellama (/var/lib/edgellama)" if not user else str(data_dir())
    notes.append(f"the index and models in {data} are kept; delete them yourself if you want")
    shown = tuple(" ".join(c) for c in commands)
    if dry_run:
        return ServiceReport(action="uninstall", scope=layout.scope, unit=layout.disk(layout.unit), unit_text="",
                             written=tuple(removed), kept=tuple(kept), commands=shown, notes=tuple(notes),
                             dry_run=True)
    for argv in commands:
        if argv[0] == "systemctl" and "daemon-reload" in argv:
            continue  # after the files are gone
        note = _run(argv, check=False)
        if note:
            notes.append(note)
    for target in removed:
        target.unlink()
    layout.disk(layout.manifest).unlink()
    removed.append(layout.disk(layout.manifest))
    for directory in sorted((Path(d) for d in manifest.get("dirs", [])), key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty (the daemon's data, or somebody else's files) or already gone
    if running:
        note = _run(_systemctl(layout, "daemon-reload"), check=False)
        if note:
            notes.append(note)
    return ServiceReport(action="uninstall", scope=layout.scope, unit=layout.disk(layout.unit), unit_text="",
                         written=tuple(removed), kept=tuple(kept), commands=shown, notes=tuple(notes),
                         dry_run=False)
