"""The systemd units and `edgellama service install/uninstall`.

systemd is not PID 1 on the machines that run these tests, so the unit itself cannot be started
here. What is tested instead: `systemd-analyze verify` and `security --offline=true` on the shipped
and the rendered units, install/uninstall round trips into a temporary root (and a temporary
user config), and the rendered unit's own ExecStart run with the unit's Environment= and a real
NOTIFY_SOCKET, until READY=1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, CORPUS, run_cli

UNITS = ROOT / "edgellama" / "units"  # package data: the one copy of the units
SYSTEM_UNIT = UNITS / "edgellama.service"
USER_UNIT = UNITS / "edgellama-user.service"
SHIPPED_EXEC = "/opt/edgellama/.venv/bin/edgellama"
MAX_SYSTEM_EXPOSURE = 1.5
MAX_USER_EXPOSURE = 1.5  # measured 1.1: no DynamicUser=, IPAddressDeny= or ProtectClock= for a user

analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
systemctl = pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl is not installed")


def _analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120)


def verify_problems(unit: Path, *, user: bool = False) -> list[str]:
    """What `systemd-analyze verify` complains about (an empty list when clean)."""
    done = _analyze(*(["--user"] if user else []), "verify", str(unit))
    problems = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0 and not problems:
        problems = [f"exit {done.returncode}"]
    return problems


def exposure(unit: Path, *, user: bool = False) -> float:
    done = _analyze(*(["--user"] if user else []), "security", "--offline=true", "--no-pager", str(unit))
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def _directive(line: str) -> str | None:
    line = line.strip()
    if not line or line.startswith(("#", ";", "[")):
        return None
    return line.split("=", 1)[0]


# -- the shipped units ----------------------------------------------------------------------------


def test_the_documented_units_are_the_packaged_ones():
    """service/ (where the README points) holds links to the package's units, not copies."""
    documented = sorted(p.name for p in (ROOT / "service").iterdir())
    assert documented == sorted(p.name for p in UNITS.glob("*.service")) == ["edgellama-user.service", "edgellama.service"]
    for name in documented:
        link = ROOT / "service" / name
        assert link.is_symlink() and link.resolve() == (UNITS / name).resolve(), link


@analyze
@pytest.mark.parametrize("unit,user", [(SYSTEM_UNIT, False), (USER_UNIT, True)], ids=["system", "user"])
def test_shipped_units_verify_clean(unit, user):
    problems = verify_problems(unit, user=user)
    # The shipped ExecStart is the reference path that `service install` rewrites; only where it is
    # absent may verify say so (the rendered units below are verified with real paths).
    if not Path(SHIPPED_EXEC).exists():
        expected = f"edgellama.service: Command {SHIPPED_EXEC} is not executable: No such file or directory"
        problems = [p for p in problems if p != expected.replace("edgellama.service", unit.name)]
    assert problems == []


@analyze
def test_system_unit_exposure_is_at_most_1_5():
    figure = exposure(SYSTEM_UNIT)
    print(f"system unit exposure: {figure}")
    assert figure <= MAX_SYSTEM_EXPOSURE


@analyze
def test_user_unit_is_hardened_as_far_as_a_user_manager_allows(tmp_path):
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nType=notify\nExecStart=/bin/true\n")
    ours, baseline = exposure(USER_UNIT, user=True), exposure(bare, user=True)
    print(f"user unit exposure: {ours} (an unhardened user unit: {baseline})")
    assert ours <= MAX_USER_EXPOSURE < baseline


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_every_directive_says_why(unit):
    lines = unit.read_text().splitlines()
    for n, line in enumerate(lines):
        key = _directive(line)
        if key is None:
            continue
        before = lines[n - 1].strip()
        # A comment right above, or the same directive continued (SystemCallFilter= twice, say).
        assert before.startswith("#") or _directive(before) == key, f"{unit.name}:{n + 1} {line!r} has no comment"


def test_system_unit_has_what_the_issue_asks_for():
    text = SYSTEM_UNIT.read_text()
    directives = {_directive(line): line.strip() for line in text.splitlines() if _directive(line)}
    for line in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "StateDirectory=edgellama", "RuntimeDirectory=edgellama", "RuntimeDirectoryMode=0750",
                 "ConfigurationDirectory=edgellama", "CacheDirectory=edgellama", "DynamicUser=yes",
                 "PrivateNetwork=yes", "Group=edgellama-clients"):
        assert line in directives.values(), line
    assert directives["ExecStart"].endswith(" serve")
    for key in ("WatchdogSec", "TimeoutStopSec", "TimeoutStartSec"):
        assert key in directives
    assert "MemoryDenyWriteExecute" not in directives  # torch's oneDNN JIT needs W+X memory
    assert "MemoryMax=" in text and "CPUQuota=" in text  # suggested in comments
    env = " ".join(v for k, v in directives.items() if k == "Environment") + " " + " ".join(
        line for line in text.splitlines() if line.startswith("Environment="))
    for pair in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "XDG_RUNTIME_DIR=%t", "XDG_DATA_HOME=%S"):
        assert pair in env, pair


# -- install / uninstall --------------------------------------------------------------------------


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs with space"
    docs.mkdir()
    shutil.copy(CORPUS / "station" / "power.md", docs / "power.md")
    return docs


@analyze
@systemctl
def test_install_uninstall_round_trip_in_a_temporary_root(tmp_path):
    from edgellama.service import install, uninstall

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("edge\n")  # somebody else's file: must survive uninstall
    before = _tree(root)
    docs = _docs(tmp_path)

    report = install(folders=[docs], root=root)
    unit = root / "etc/systemd/system/edgellama.service"
    assert report.unit == unit and unit.exists()
    assert (root / "etc/systemd/system/multi-user.target.wants/edgellama.service").is_symlink()
    assert (root / "etc/sysusers.d/edgellama.conf").read_text().splitlines()[-1] == "g edgellama-clients -"
    assert (root / "etc/edgellama/config.toml").exists()
    assert "systemctl --root=" in " ".join(report.commands) and "systemd-sysusers" not in " ".join(report.commands)

    # The config the daemon will read lists the folder; the unit binds it into the sandbox.
    import tomllib

    assert tomllib.loads((root / "etc/edgellama/config.toml").read_text())["folders"] == [str(docs)]
    text = unit.read_text()
    assert f'BindReadOnlyPaths="-{docs}"' in text
    exec_start = shlex.split(next(l for l in text.splitlines() if l.startswith("ExecStart=")).split("=", 1)[1])
    assert exec_start[-1] == "serve"
    assert Path(exec_start[0]).is_file() and os.access(exec_start[0], os.X_OK)
    assert exec_start[0] in (sys.executable, str(Path(sys.prefix) / "bin" / "edgellama"))
    if exec_start[0] == sys.executable:
        assert exec_start[1:3] == ["-m", "edgellama"]

    # The rendered unit verifies clean with its real paths, and keeps its exposure.
    assert verify_problems(unit) == []
    assert exposure(unit) <= MAX_SYSTEM_EXPOSURE

    # Installing again (another folder) updates our own config and unit.
    more = tmp_path / "more"
    more.mkdir()
    install(folders=[docs, more], root=root)
    assert f"BindReadOnlyPaths=-{more}" in unit.read_text()

    removed = uninstall(root=root)
    assert unit in removed.written and removed.kept == ()
    assert _tree(root) == before
    assert (root / "etc" / "hostname").read_text() == "edge\n"


@systemctl
def test_uninstall_keeps_a_config_edited_since_install(tmp_path):
    from edgellama.service import install, uninstall

    root = tmp_path / "root"
    install(folders=[_docs(tmp_path)], root=root)
    config = root / "etc/edgellama/config.toml"
    config.write_text(config.read_text() + "max_queue = 8\n")
    report = uninstall(root=root)
    assert report.kept == (config,) and any("changed since install" in n for n in report.notes)
    assert config.exists() and not (root / "etc/systemd/system/edgellama.service").exists()
    assert _tree(root) == {"etc", "etc/edgellama", "etc/edgellama/config.toml"}


def test_dry_run_changes_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    done = run_cli("service", "install", "--root", str(root), "--folder", str(_docs(tmp_path)), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "Type=notify" in done.stdout and "would write " in done.stdout and "would run systemctl" in done.stdout
    assert _tree(root) == set()


@systemctl
def test_cli_round_trip_and_clear_errors(tmp_path):
    root = tmp_path / "root"
    missing = run_cli("service", "install", "--root", str(root), "--folder", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [f"edgellama: error: folder to watch {tmp_path / 'nope'} is not a directory"]
    nothing = run_cli("service", "uninstall", "--root", str(root))
    assert nothing.returncode == 1 and nothing.stderr.startswith("edgellama: error: nothing to uninstall")
    assert len(nothing.stderr.strip().splitlines()) == 1

    done = run_cli("service", "install", "--root", str(root), "--folder", str(_docs(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert f"wrote {root}/etc/systemd/system/edgellama.service" in done.stdout
    assert "start it with: systemctl start edgellama" in done.stdout
    done = run_cli("service", "uninstall", "--root", str(root), "--json")
    assert done.returncode == 0, done.stderr
    assert f"{root}/etc/systemd/system/edgellama.service" in json.loads(done.stdout)["written"]
    assert _tree(root) == set()


def test_a_unit_not_written_by_install_is_left_alone(tmp_path):
    from edgellama.errors import ServiceError
    from edgellama.service import install

    root = tmp_path / "root"
    unit = root / "etc/systemd/system/edgellama.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(ServiceError, match="was not written by"):
        install(root=root)
    assert unit.read_text() == "[Service]\nExecStart=/bin/true\n"


@analyze
@systemctl
def test_user_install_round_trip(tmp_path, isolated_home):
    from edgellama.config import data_dir
    from edgellama.errors import ServiceError
    from edgellama.service import install, uninstall

    with pytest.raises(ServiceError, match="--root is for the system unit"):
        install(user=True, root=tmp_path)
    docs = _docs(tmp_path)
    config_home = isolated_home / "config"
    report = install(user=True, folders=[docs])
    unit = config_home / "systemd/user/edgellama.service"
    assert report.unit == unit and report.scope == "user"
    assert (config_home / "systemd/user/default.target.wants/edgellama.service").is_symlink()
    text = unit.read_text()
    assert f"ReadWritePaths=-{data_dir()}" in text and data_dir().is_dir()
    assert f"XDG_CONFIG_HOME={config_home}" in text
    assert verify_problems(unit, user=True) == []
    assert exposure(unit, user=True) <= MAX_USER_EXPOSURE
    assert (config_home / "edgellama/config.toml").exists()

    uninstall(user=True)
    assert not unit.exists() and not (config_home / "edgellama").exists()
    assert not (config_home / "systemd").exists()


# -- from an installed wheel, not the checkout ------------------------------------------------------


def _installed_venv(tmp_path: Path) -> Path:
    """A fresh venv with EdgeLlama installed from a wheel (not editable), built from a copy of the
    package outside the checkout. The venv sees the test venv's site-packages through a .pth file
    (``--system-site-packages`` would only reach the base interpreter), so torch and friends are
    not installed again, while ``edgellama`` itself resolves to the wheel's copy."""
    import sysconfig

    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "edgellama", source / "edgellama", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    done = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = wheels.glob("edgellama-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "test-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


@analyze
@systemctl
def test_service_install_from_an_installed_wheel(tmp_path, isolated_home):
    venv = _installed_venv(tmp_path)
    elsewhere = tmp_path / "elsewhere"  # neither the checkout nor the source the wheel was built from
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300)

    where = run(str(venv / "bin" / "python"), "-c", "import edgellama; print(edgellama.__file__)").stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT), where
    edgellama = str(venv / "bin" / "edgellama")
    docs = _docs(tmp_path)

    root = tmp_path / "root"
    done = run(edgellama, "service", "install", "--root", str(root), "--folder", str(docs))
    assert done.returncode == 0, done.stdout + done.stderr
    unit = root / "etc/systemd/system/edgellama.service"
    text = unit.read_text()
    assert "from edgellama/units/edgellama.service" in text.splitlines()[0]
    assert f"ExecStart={edgellama} serve" in text.splitlines()  # the venv's own command, no PYTHONPATH
    assert "PYTHONPATH" not in text and str(ROOT) not in text
    assert f'BindReadOnlyPaths="-{docs}"' in text
    assert (root / "etc/edgellama/config.toml").exists()
    assert verify_problems(unit) == []

    done = run(edgellama, "service", "install", "--user", "--folder", str(docs))
    assert done.returncode == 0, done.stdout + done.stderr
    user_unit = isolated_home / "config" / "systemd/user/edgellama.service"
    assert f"ExecStart={edgellama} serve" in user_unit.read_text().splitlines()
    assert verify_problems(user_unit, user=True) == []

    for argv in (("--root", str(root)), ("--user",)):
        done = run(edgellama, "service", "uninstall", *argv)
        assert done.returncode == 0, done.stdout + done.stderr
    assert not unit.exists() and not user_unit.exists()


# -- the rendered unit's command line, as systemd would run it --------------------------------------


def unit_process(unit_text: str, specifiers: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """ExecStart's argv and the Environment= of a unit, with its specifiers expanded."""

    def expand(word: str) -> str:
        return re.sub(r"%(.)", lambda m: "%" if m.group(1) == "%" else specifiers[m.group(1)], word)

    argv: list[str] = []
    env: dict[str, str] = {}
    for line in unit_text.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = [expand(w) for w in shlex.split(value)]
        elif key == "Environment":
            for word in shlex.split(value):
                name, _, val = expand(word).partition("=")
                env[name] = val
    return argv, env


@pytest.mark.models
@analyze
def test_rendered_exec_start_with_the_units_environment_reaches_ready(tmp_path, shared_data):
    from daemon_harness import Notifications, call
    from edgellama.service import install

    docs = _docs(tmp_path)
    report = install(folders=[docs], root=tmp_path / "root", dry_run=True)
    # systemd's directories for this unit, under a short temporary root (a socket path has 107 bytes).
    base = Path(tempfile.mkdtemp(prefix="el-svc-"))
    try:
        dirs = {"t": base / "run", "S": base / "lib", "E": base / "etc", "C": base / "cache"}
        for name, folder in dirs.items():
            (folder / "edgellama").mkdir(parents=True)  # what RuntimeDirectory= etc. create
        (dirs["t"] / "edgellama").chmod(0o750)
        (dirs["E"] / "edgellama" / "config.toml").write_text(f'folders = ["{docs}"]\nsettle_seconds = 0.5\n')
        # The Q4_0 copy of the bundled model is made once per test session.
        (shared_data / "edgellama" / "models").mkdir(parents=True, exist_ok=True)
        (dirs["S"] / "edgellama" / "models").symlink_to(shared_data / "edgellama" / "models")
        argv, env = unit_process(report.unit_text, {k: str(v) for k, v in dirs.items()})
        assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
        notify = Notifications(base / "notify")
        env |= {"PATH": os.environ["PATH"], "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
        log = open(tmp_path / "daemon.log", "w+")
        started = time.monotonic()
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        try:
            deadline = time.monotonic() + 240
            while "READY=1" not in notify.lines():
                assert process.poll() is None and time.monotonic() < deadline, log.seek(0) or log.read()
                time.sleep(0.1)
            print(f"time to READY through the unit's command line: {time.monotonic() - started:.1f} s")
            sock = dirs["t"] / "edgellama" / "edgellama.sock"  # /run/edgellama/edgellama.sock under systemd
            assert sock.is_socket() and sock.stat().st_mode & 0o777 == 0o660
            status, body, _ = call(sock, "GET", "/health")
            assert status == 200, body
            assert body.get("db") == str(dirs["S"] / "edgellama" / "edgellama.db")  # /var/lib/edgellama/...
            deadline = time.monotonic() + 60
            while True:
                status, body, _ = call(sock, "POST", "/search", {"query": "battery bank capacity", "k": 1})
                if status == 200 and body["results"]:
                    break
                assert time.monotonic() < deadline, body
                time.sleep(0.5)
            assert Path(body["results"][0]["path"]).name == "power.md"
            assert any(line.startswith("STATUS=") for line in notify.lines())
            deadline = time.monotonic() + 10
            while "WATCHDOG=1" not in notify.lines():
                assert time.monotonic() < deadline, notify.lines()
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0  # TimeoutStopSec=30 in the unit
            assert "STOPPING=1" in notify.lines()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            notify.close()
            log.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- who may use the socket of the system unit -----------------------------------------------------

_PEER_SERVER = r"""
import os, socket, sys, types
from edgellama.daemon import Engine
from edgellama.server import peer_credentials, peer_groups
path = sys.argv[1]
os.umask(0o117)  # as the daemon: the socket is born 0660
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(4)
print("listening", flush=True)
me = types.SimpleNamespace(_uid=os.getuid(), _gid=os.getgid())
for _ in range(int(sys.argv[2])):
    conn, _ = server.accept()
    creds = peer_credentials(conn)
    print(f"peer uid={creds[1]} allowed={Engine.peer_allowed(me, *creds, groups=peer_groups(conn))} "
          f"allowed_by_proc={Engine.peer_allowed(me, *creds)}", flush=True)
    conn.close()
"""

_PEER_CLIENT = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
                "try:\n    s.connect(sys.argv[1])\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)")


def test_a_member_of_the_client_group_may_use_the_socket_under_the_units_sandbox(tmp_path):
    """Emulates the system unit: the daemon as a transient uid whose primary group is
    edgellama-clients, behind ProtectProc=invisible (/proc mounted hidepid=invisible), a socket
    0660 in a 0750 folder. A local user in the group gets through both the file permissions and the
    daemon's peer check; a user outside it cannot even connect."""
    python = "/usr/bin/python3"
    if os.geteuid() != 0:
        pytest.skip("needs root to run processes as other users")
    if not os.access(python, os.X_OK) or not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("needs /usr/bin/python3, unshare and setpriv")
    daemon_uid, group, outsider = 61234, 4243, 65534  # 61184-65519 is systemd's DynamicUser= range
    base = Path(tempfile.mkdtemp(prefix="el-peer-"))
    try:
        base.chmod(0o755)
        run = base / "edgellama"  # RuntimeDirectory=edgellama, RuntimeDirectoryMode=0750
        run.mkdir(mode=0o750)
        os.chown(run, daemon_uid, group)
        sock = run / "edgellama.sock"
        script = base / "server.py"
        script.write_text(_PEER_SERVER)
        script.chmod(0o644)
        sandbox = ("mount -t proc -o hidepid=invisible proc /proc && "
                   f"exec setpriv --reuid={daemon_uid} --regid={group} --clear-groups {python} {script} {sock} 1")
        server = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", sandbox],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                                  env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
        try:
            first = server.stdout.readline().strip()
            if first != "listening":
                server.wait(timeout=10)
                pytest.skip(f"cannot emulate the sandbox here: {server.stderr.read().strip()[-200:]}")

            def client(groups: list[int]) -> str:
                return subprocess.run([python, "-c", _PEER_CLIENT, str(sock)], capture_output=True, text=True,
                                      timeout=30, cwd="/", user=outsider, group=outsider, extra_groups=groups,
                                      env={"PATH": "/usr/bin:/bin"}).stdout.strip()

            assert client([]) == "PermissionError"  # not in the group: the 0750 folder keeps it out
            assert client([group]) == "connected"  # `usermod -aG edgellama-clients alice`
            verdict = server.stdout.readline().strip()
            # The daemon sees the member's groups through SO_PEERGROUPS; /proc/PID is hidden from it.
            assert verdict == f"peer uid={outsider} allowed=True allowed_by_proc=False", verdict
            assert server.wait(timeout=30) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- the unit under a real systemd ------------------------------------------------------------------

_BOOT = """set -e
mount -t tmpfs -o size=2G tmpfs "$1"
mkdir "$1/upper" "$1/work" "$1/root"
mount -t overlay overlay -o lowerdir=/,upperdir="$1/upper",workdir="$1/work" "$1/root"
# Keep the host's /tmp visible (a CI clone may live there): no tmpfs from nspawn, and no emptying
# of /tmp at boot by systemd-tmpfiles (an /etc entry overrides the shipped tmp.conf).
mkdir -p "$1/root/etc/tmpfiles.d"
printf 'd /tmp 1777 root root -\nd /var/tmp 1777 root root -\n' > "$1/root/etc/tmpfiles.d/tmp.conf"
export SYSTEMD_NSPAWN_TMPFS_TMP=0
exec systemd-nspawn -D "$1/root" --private-network --register=no --keep-unit --quiet \\
     --machine=edgellama-test --boot -- systemd.unit=basic.target
"""

_CLIENT = r"""
import http.client, json, socket, sys
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(120)
        self.sock.connect(sys.argv[1])
try:
    conn = Conn("localhost", timeout=120)
    conn.request(sys.argv[2], sys.argv[3], body=sys.argv[4] if len(sys.argv) > 4 else None)
    response = conn.getresponse()
    print(json.dumps({"status": response.status, "body": json.loads(response.read())}))
except OSError as err:
    print(json.dumps({"error": type(err).__name__}))
"""


def _same_filesystem(*paths: str) -> bool:
    root = os.stat("/").st_dev
    return all(os.stat(p).st_dev == root for p in paths)


@pytest.mark.models
@pytest.mark.container
def test_the_unit_under_a_real_systemd(tmp_path):
    """Boots this machine's own OS (an overlay of / on a tmpfs, in a private mount namespace, so
    nothing reaches the host) under systemd-nspawn, then does what an administrator would:
    `edgellama service install`, `systemctl start`, ask over the socket as a member of the client
    group and fail to connect as anyone else, reload, stop, uninstall."""
    for tool in ("systemd-nspawn", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install systemd-container util-linux)")
    if os.geteuid() != 0:
        pytest.skip("booting a container needs root")
    client_python = "/usr/bin/python3"
    if not os.access(client_python, os.X_OK):
        pytest.skip("needs /usr/bin/python3 for the clients inside the container")
    if not _same_filesystem(str(ROOT), sys.prefix, os.path.realpath(sys.executable)):
        pytest.skip("the checkout and the venv must be on the root file system (the container's lower layer)")
    base = Path(tempfile.mkdtemp(prefix="el-nspawn-"))
    boot_log = open(tmp_path / "boot.log", "w+")
    boot = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", _BOOT, "sh", str(base)],
                            stdin=subprocess.DEVNULL, stdout=boot_log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(ROOT), "HOME": "/root", "LANG": "C.UTF-8"}

    def inside(*argv: str, check: bool = True, timeout: float = 330) -> subprocess.CompletedProcess:
        done = subprocess.run(["nsenter", "-t", str(init), "-a", "--", *argv], capture_output=True, text=True,
                              env=env, timeout=timeout)
        assert not check or done.returncode == 0, (argv, done.stdout, done.stderr, journal())
        return done

    def journal() -> str:
        return subprocess.run(["nsenter", "-t", str(init), "-a", "--", "journalctl", "-u", "edgellama",
                               "--no-pager", "-n", "40"], capture_output=True, text=True, timeout=60).stdout

    def ask(user: str, method: str, path: str, body: dict | None = None) -> dict:
        argv = ["runuser", "-u", user, "--", client_python, "-c", _CLIENT, "/run/edgellama/edgellama.sock",
                method, path, *([json.dumps(body)] if body is not None else [])]
        return json.loads(inside(*argv).stdout)

    def show(*props: str) -> dict:
        out = inside("systemctl", "show", "edgellama", *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    init = None
    try:
        deadline = time.monotonic() + 120
        while init is None:
            assert boot.poll() is None and time.monotonic() < deadline, boot_log.seek(0) or boot_log.read()
            # The boot shell's own children (mount, mkdir) come and go before it becomes
            # systemd-nspawn: only a child of nspawn is the container's init.
            if Path(f"/proc/{boot.pid}/comm").read_text().strip() == "systemd-nspawn":
                children = subprocess.run(["pgrep", "-P", str(boot.pid)], capture_output=True, text=True).stdout.split()
                init = int(children[0]) if children else None
            time.sleep(0.5)
        state = inside("systemctl", "is-system-running", "--wait", check=False, timeout=180).stdout.strip()
        print(f"container booted: {state}")

        # Install as an administrator would: writes the unit, the config, the group; enables it.
        # One folder under /srv, one in a private home (0700), shared with the group only.
        inside("mkdir", "-p", "/srv/edgellama-docs")
        inside("cp", str(CORPUS / "station/power.md"), "/srv/edgellama-docs/")
        inside("useradd", "-m", "carol")
        inside("chmod", "700", "/home/carol")
        inside("runuser", "-u", "carol", "--", "mkdir", "-m", "700", "/home/carol/docs")
        inside("cp", str(CORPUS / "station/water-supply.md"), "/home/carol/docs/")
        installed = inside(sys.executable, "-m", "edgellama", "service", "install",
                           "--folder", "/srv/edgellama-docs", "--folder", "/home/carol/docs")
        assert "ran systemctl daemon-reload" in installed.stdout and "ran systemctl enable" in installed.stdout
        assert inside("getent", "group", "edgellama-clients").stdout.startswith("edgellama-clients:")
        inside("chown", "-R", "carol:edgellama-clients", "/home/carol/docs")
        inside("chmod", "-R", "g+rX", "/home/carol/docs")

        started = time.monotonic()
        inside("systemctl", "start", "edgellama")  # returns once the daemon sent READY=1
        print(f"systemctl start (to READY=1) took {time.monotonic() - started:.1f} s")
        props = show("ActiveState", "StatusText", "User", "Group", "WatchdogUSec", "MainPID")
        assert props["ActiveState"] == "active" and props["StatusText"].startswith("ready"), props
        assert (props["User"], props["Group"]) == ("edgellama", "edgellama-clients")
        mode = inside("stat", "-c", "%a %U %G", "/run/edgellama", "/run/edgellama/edgellama.sock").stdout.split("\n")
        assert mode[:2] == ["750 edgellama edgellama-clients", "660 edgellama edgellama-clients"], mode
        figure = re.search(r"exposure level for \S+: ([0-9.]+)",
                           inside("systemd-analyze", "security", "edgellama", "--no-pager").stdout)
        assert figure and float(figure.group(1)) <= MAX_SYSTEM_EXPOSURE
        print(f"exposure of the running unit: {figure.group(1)}")

        # Who may connect: root, members of edgellama-clients; nobody else.
        inside("useradd", "alice")
        inside("useradd", "bob")
        inside("usermod", "-aG", "edgellama-clients", "alice")
        assert ask("bob", "GET", "/health") == {"error": "PermissionError"}
        assert ask("alice", "GET", "/health")["status"] == 200
        deadline = time.monotonic() + 180
        while True:  # the watched folders are indexed in the background
            status = ask("alice", "GET", "/status")
            if status["status"] == 200 and status["body"]["documents"] == 2:
                break
            assert time.monotonic() < deadline, (status, journal())
            time.sleep(1)
        found = ask("alice", "POST", "/search", {"query": "water supply", "k": 1})
        assert found["body"]["results"][0]["path"] == "/home/carol/docs/water-supply.md", found
        answer = ask("alice", "POST", "/ask", {"question": "How much energy can the battery bank store?"})
        assert answer["status"] == 200, answer
        assert [Path(s["path"]).name for s in answer["body"]["sources"]][:1] == ["power.md"], answer
        print(f"answer through the unit's socket: {answer['body']['answer']!r}")

        # The watchdog is armed and fed; reload keeps the process; stop is clean (exit 0).
        pid = show("MainPID")["MainPID"]
        inside("systemctl", "reload", "edgellama")
        deadline = time.monotonic() + 60  # "reloading" until the daemon sends READY=1 again
        while (props := show("ActiveState", "MainPID", "WatchdogTimestampMonotonic"))["ActiveState"] == "reloading":
            assert time.monotonic() < deadline, journal()
            time.sleep(0.5)
        assert props["ActiveState"] == "active" and props["MainPID"] == pid
        assert int(props["WatchdogTimestampMonotonic"]) > 0
        inside("systemctl", "stop", "edgellama")
        props = show("Result", "ExecMainStatus", "NRestarts")
        assert props == {"Result": "success", "ExecMainStatus": "0", "NRestarts": "0"}, (props, journal())
        assert inside("test", "-e", "/run/edgellama", check=False).returncode == 1

        removed = inside(sys.executable, "-m", "edgellama", "service", "uninstall")
        assert "removed /etc/systemd/system/edgellama.service" in removed.stdout
        assert inside("getent", "group", "edgellama-clients", check=False).returncode == 2
        assert inside("test", "-e", "/etc/systemd/system/edgellama.service", check=False).returncode == 1
    finally:
        if boot.poll() is None:
            os.kill(boot.pid, signal.SIGTERM)  # nspawn powers the container off
            try:
                boot.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(boot.pid, signal.SIGKILL)
                boot.wait()
        boot_log.close()
        shutil.rmtree(base, ignore_errors=True)


def test_service_commands_are_documented_and_light():
    readme = (ROOT / "README.md").read_text()
    for name in ("install", "uninstall"):
        assert f"edgellama service {name}" in readme
    code = ("import sys\nsys.argv = ['edgellama', 'service', 'install', '--help']\nfrom edgellama import cli\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'llama_cpp', 'sentence_transformers', 'numpy') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "HEAVY []" in done.stdout and "--folder" in done.stdout, done.stdout + done.stderr


@systemctl
def test_reinstall_replaces_an_edited_unit_and_says_so(tmp_path):
    from edgellama.service import install, uninstall

    root = tmp_path / "root"
    docs = _docs(tmp_path)
    first = install(folders=[docs], root=root)
    first.unit.write_text(first.unit.read_text() + "Nice=5\n")
    again = install(folders=[docs], root=root)
    assert any("edited since install" in note for note in again.notes)
    assert first.unit.read_text() == again.unit_text
    uninstall(root=root)
    assert _tree(root) == set()
