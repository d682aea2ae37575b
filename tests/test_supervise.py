"""`buoy supervise` and supervisord.conf: the pure env decision, the event listener, and
real supervisord runs on this host (stop order, app exit stops everything)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdServer, wait_for

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, RecordError
from buoy.ops.supervise import supervisor_env
from buoy.ops.supervisord_run import wait_status_code

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "supervisord.conf"
ANNOUNCE = {"ANNOUNCE_PATH": "/internal/app1/dev/web/ghost.example", "PORT": "8000", "TYPE": "HTTP"}


# The pure part ---------------------------------------------------------------------------

def test_app_only_runs_the_app() -> None:
    env = supervisor_env(["--", "python3", "-m", "http.server", "a b"], {})
    assert env["BUOY_RUN_APP"] == "true"
    assert env["BUOY_RUN_ANNOUNCE"] == "false" and env["BUOY_RUN_LISTEN"] == "false"
    assert env["BUOY_APP_COMMAND"] == "python3 -m http.server 'a b'"


def test_paths_switch_announce_and_listen_on() -> None:
    env = supervisor_env([], {**ANNOUNCE, "LISTEN_PATH": "/services/internal/app1/dev"})
    assert (env["BUOY_RUN_APP"], env["BUOY_RUN_ANNOUNCE"], env["BUOY_RUN_LISTEN"]) == \
        ("false", "true", "true")
    assert env["BUOY_APP_COMMAND"] == "true"  # never started, but supervisord needs a value


def test_announce_stop_wait_covers_the_drain() -> None:
    assert supervisor_env(["x"], {**ANNOUNCE, "ANNOUNCE_DRAIN": "2.5"})[
        "BUOY_ANNOUNCE_STOPWAIT"] == "8"
    assert supervisor_env(["x"], ANNOUNCE)["BUOY_ANNOUNCE_STOPWAIT"] == "5"


def test_defaults_and_normalised_choices() -> None:
    env = supervisor_env(["x"], {"BUOY_APP_STOPSIGNAL": "sigint"})
    assert env["BUOY_APP_STOPSIGNAL"] == "INT"
    assert env["BUOY_APP_STOPWAIT"] == "10" and env["BUOY_LISTEN_STOPWAIT"] == "10"
    assert env["BUOY_SUPERVISOR_LOGLEVEL"] == "info"


@pytest.mark.parametrize(("argv", "env", "setting"), [
    ([], {}, "LISTEN_PATH"),
    ([], {"LISTEN_PATH": "  "}, "LISTEN_PATH"),
    (["x"], {"ANNOUNCE_PATH": "/Bad/path"}, "ANNOUNCE_PATH"),
    (["x"], {**ANNOUNCE, "PORT": "70000"}, "PORT"),
    (["x"], {**ANNOUNCE, "TYPE": "UDP"}, "TYPE"),
    (["x"], {"LISTEN_PATH": "/announce/internal"}, "LISTEN_PATH"),
    (["x"], {"LISTEN_PATH": "/services/internal", "BUOY_PREFIX": "no slash"}, "BUOY_PREFIX"),
    (["x"], {**ANNOUNCE, "ANNOUNCE_DRAIN": "-1"}, "ANNOUNCE_DRAIN"),
    (["x"], {**ANNOUNCE, "ANNOUNCE_DRAIN": "nan"}, "ANNOUNCE_DRAIN"),
    (["x"], {"BUOY_APP_STOPWAIT": "0"}, "BUOY_APP_STOPWAIT"),
    (["x"], {"BUOY_LISTEN_STOPWAIT": "ten"}, "BUOY_LISTEN_STOPWAIT"),
    (["x"], {"BUOY_APP_STOPSIGNAL": "TERM\nuser=nobody"}, "BUOY_APP_STOPSIGNAL"),
    (["x"], {"BUOY_SUPERVISOR_LOGLEVEL": "loud"}, "BUOY_SUPERVISOR_LOGLEVEL"),
    (["x"], {**ANNOUNCE, "BUOY_ETCD_ENDPOINTS": "ftp://x"}, "BUOY_ETCD_ENDPOINTS"),
    (["x"], {**ANNOUNCE, "BUOY_ETCD_ENDPOINTS": "https://etcd:2379"}, "BUOY_ETCD_CA"),
    (["x"], {**ANNOUNCE, "BUOY_ETCD_USER": "u"}, "BUOY_ETCD_USER"),
])
def test_bad_settings_are_named(argv: list[str], env: dict[str, str], setting: str) -> None:
    with pytest.raises(RecordError) as err:
        supervisor_env(argv, env)
    assert err.value.field == setting


def test_a_path_whose_dns_name_passes_253_characters_is_refused_before_anything_runs() -> None:
    long_name = ".".join(["a" * 60] * 4)  # 243 characters: a valid NAME on its own
    env = {**ANNOUNCE, "ANNOUNCE_ID": "x" * 12,
           "ANNOUNCE_PATH": f"/internal/app1/dev/web/{long_name}"}
    with pytest.raises(RecordError) as err:
        supervisor_env(["x"], env)
    assert err.value.field == "ANNOUNCE_PATH" and "253" in str(err.value)
    short = {**env, "ANNOUNCE_PATH": "/internal/app1/dev/web/" + ".".join(["a" * 60] * 2)}
    assert supervisor_env(["x"], short)["BUOY_RUN_ANNOUNCE"] == "true"


def test_wait_status_is_reported_like_a_shell() -> None:
    assert wait_status_code(3 << 8) == 3
    assert wait_status_code(0) == 0
    assert wait_status_code(signal.SIGKILL) == 128 + 9


def test_every_variable_the_config_uses_is_provided() -> None:
    used = set(re.findall(r"%\(ENV_(\w+)\)s", CONF.read_text()))
    provided = supervisor_env(["x"], {**ANNOUNCE, "LISTEN_PATH": "/services/internal"})
    assert used and used <= set(provided)


def test_announce_stops_first_and_listen_last() -> None:
    import configparser

    parser = configparser.RawConfigParser()
    parser.read(CONF)
    priority = {s.split(":", 1)[1]: int(parser.get(s, "priority")) for s in parser.sections()
                if s.startswith("program:")}
    # supervisord stops groups from the highest priority number to the lowest.
    assert priority["announce"] > priority["app"] > priority["listen"]


# The command line ------------------------------------------------------------------------

def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("ANNOUNCE_PATH", "LISTEN_PATH", "PORT", "TYPE", "BUOY_PREFIX")}
    return subprocess.run([sys.executable, "-m", "buoy", "supervise", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=30)


def test_cli_refuses_when_nothing_would_run() -> None:
    res = run_cli(env={})
    assert res.returncode == 2
    assert res.stderr.strip().startswith("buoy: error: LISTEN_PATH: nothing to run")


def test_cli_print_env() -> None:
    res = run_cli("--print-env", "--", "sh", "-c", "echo 50% $HOME", env=ANNOUNCE)
    assert res.returncode == 0, res.stderr
    lines = dict(line.split("=", 1) for line in res.stdout.splitlines())
    assert lines["BUOY_APP_COMMAND"] == "sh -c 'echo 50% $HOME'"
    assert lines["BUOY_RUN_ANNOUNCE"] == "true"


# Real supervisord runs -------------------------------------------------------------------

APP = """
import json, signal, sys, time
from pathlib import Path
from buoy.etcd.settings import EtcdSettings
from buoy.etcd.store import EtcdStore
out, endpoint, key = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def on_term(*_):
    # Record whether the announcement was still there when supervisord stopped the app.
    present = EtcdStore(EtcdSettings.from_strings(endpoint)).get(key) is not None
    out.write_text(json.dumps({"t": time.time(), "present": present}))
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
while not out.with_suffix(".exit").exists():
    time.sleep(0.05)
sys.exit(3)
"""


@pytest.fixture
def supervised(tmp_path: Path, etcd: EtcdServer, prefix: str) -> Iterator[dict[str, object]]:
    """supervisord (through `buoy supervise`) on this host with its socket in tmp_path."""
    conf = tmp_path / "supervisord.conf"
    conf.write_text(CONF.read_text().replace("/run/buoy-supervisor", str(tmp_path / "sv"))
                    .replace("/run/buoy-supervisord.pid", str(tmp_path / "sv.pid")))
    app = tmp_path / "app.py"
    app.write_text(APP)
    key = KeyLayout(prefix).announce_key(AnnouncePath.parse(ANNOUNCE["ANNOUNCE_PATH"]), "svtest")
    env = {**os.environ, **ANNOUNCE, "ANNOUNCE_ID": "svtest", "ANNOUNCE_DRAIN": "2",
           "ANNOUNCE_TTL": "60", "BUOY_ETCD_ENDPOINTS": etcd.endpoint, "BUOY_PREFIX": prefix}
    env.pop("LISTEN_PATH", None)
    # Append mode: supervisord reopens /dev/stdout, and both must write at the end.
    log = open(tmp_path / "supervisord.log", "ab")  # noqa: SIM115 - handed to the child
    env["BUOY_SUPERVISORD_CONF"] = str(conf)
    proc = subprocess.Popen(  # what the images run as PID 1
        [sys.executable, "-m", "buoy.ops.supervise", "--",
         sys.executable, str(app), str(tmp_path / "term.json"), etcd.endpoint, key],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    state = {"proc": proc, "key": key, "out": tmp_path / "term.json",
             "log": tmp_path / "supervisord.log"}
    try:
        yield state
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_stop_withdraws_and_drains_before_the_app_stops(
        supervised: dict[str, object], etcd: EtcdServer) -> None:
    from conftest import store_for

    proc, key, out = supervised["proc"], str(supervised["key"]), Path(str(supervised["out"]))
    assert isinstance(proc, subprocess.Popen)
    store = store_for(etcd)
    try:
        wait_for(lambda: store.get(key) is not None, 20, what="announce key")
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
        wait_for(lambda: store.get(key) is None, 5, what="withdrawn")
        withdrawn = time.time()
        assert proc.wait(30) == 0
    finally:
        store.close()
    term = json.loads(out.read_text())
    assert term["present"] is False, "the app was stopped while still announced"
    assert term["t"] - withdrawn > 1.0, "the app was stopped before ANNOUNCE_DRAIN (2 s) passed"


def test_app_exit_code_is_the_containers_after_announce_withdrew(
        supervised: dict[str, object], etcd: EtcdServer) -> None:
    from conftest import store_for

    proc, key, out = supervised["proc"], str(supervised["key"]), Path(str(supervised["out"]))
    assert isinstance(proc, subprocess.Popen)
    store = store_for(etcd)
    try:
        wait_for(lambda: store.get(key) is not None, 20, what="announce key")
        out.with_suffix(".exit").write_text("go")  # the app exits 3 on its own
        assert proc.wait(30) == 3
        # Gone long before its 60 s TTL: announce was stopped (and revoked), not killed.
        assert store.get(key) is None
    finally:
        store.close()
    log = Path(str(supervised["log"])).read_text()
    assert "app exited (exit code 3): withdrawing and stopping the container" in log
    assert log.index("app exited (exit code 3)") < log.index("stopped: announce")


def _child(parent: int, word: str) -> int:
    """The pid of `parent`'s child with `word` (or a path ending in /`word`) among its args."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        args = cmdline.split()
        if "buoy.ops.supervise" in args:
            continue  # the forked validation child of PID 1 has PID 1's command line
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and any(
                a in (word, f"buoy.{word}") or a.endswith("/" + word) for a in args):
            return int(entry.name)
    return 0


def test_announce_dying_is_restarted_and_logged(
        supervised: dict[str, object], etcd: EtcdServer) -> None:
    from conftest import store_for

    proc, key = supervised["proc"], str(supervised["key"])
    assert isinstance(proc, subprocess.Popen)
    store = store_for(etcd)
    try:
        first = wait_for(lambda: store.get(key), 20, what="announce key")
        pid = wait_for(lambda: _child(proc.pid, "announce"), 10, what="announce process")
        wait_for(lambda: "success: announce entered RUNNING" in
                 Path(str(supervised["log"])).read_text(), 10, what="announce RUNNING")
        os.kill(pid, signal.SIGKILL)
        # A new announce puts the record under a lease of its own.
        wait_for(lambda: (kv := store.get(key)) is not None and kv.lease != first.lease, 20,
                 what="record under a new announce's lease")
        assert proc.poll() is None  # the container keeps running
        log = Path(str(supervised["log"])).read_text()
        assert "exited: announce (terminated by SIGKILL; not expected)" in log
        assert log.count("spawned: 'announce'") == 2
    finally:
        store.close()


def test_app_killed_by_a_signal_exits_128_plus_n(
        supervised: dict[str, object], etcd: EtcdServer) -> None:
    proc = supervised["proc"]
    assert isinstance(proc, subprocess.Popen)
    app = wait_for(lambda: _child(proc.pid, "app.py"), 20, what="app process")
    os.kill(app, signal.SIGKILL)
    assert proc.wait(30) == 128 + 9


def test_image_entrypoint_loads_neither_click_nor_grpc() -> None:
    code = ("import sys, buoy.ops.supervise; "
            "print(sorted(m for m in ('click', 'grpc', 'etcd3', 'docker') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.stdout.strip() == "[]", res.stderr


def test_image_entrypoint_refuses_bad_settings_in_one_line() -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("LISTEN_PATH", "BUOY_PREFIX")}
    res = subprocess.run([sys.executable, "-m", "buoy.ops.supervise", "--", "true"],
                         env={**base, **ANNOUNCE, "PORT": "70000"}, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "buoy: error: PORT: must be an integer from 1 to 65535 (got 70000)"]


def test_pid_1_keeps_openssl_out(supervised: dict[str, object], etcd: EtcdServer) -> None:
    """supervisord runs without ssl and _hashlib: no libssl or libcrypto mapped in PID 1."""
    from conftest import store_for

    proc, key = supervised["proc"], str(supervised["key"])
    assert isinstance(proc, subprocess.Popen)
    store = store_for(etcd)
    try:
        wait_for(lambda: store.get(key) is not None, 20, what="announce key (supervisord up)")
    finally:
        store.close()
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libssl" not in maps and "libcrypto" not in maps
    assert "buoy.ops.supervise" in Path(f"/proc/{proc.pid}/cmdline").read_text()


def test_announce_that_cannot_stay_up_stops_the_container_with_1(tmp_path: Path) -> None:
    """announce exits 2 at each start (its CA file does not load): FATAL after its retries,
    and PID 1 stops the container with exit code 1 instead of running unannounced."""
    base = {k: v for k, v in os.environ.items() if k not in ("LISTEN_PATH", "BUOY_PREFIX")}
    conf = tmp_path / "supervisord.conf"
    conf.write_text(CONF.read_text().replace("/run/buoy-supervisor", str(tmp_path / "sv"))
                    .replace("/run/buoy-supervisord.pid", str(tmp_path / "sv.pid")))
    env = {**base, **ANNOUNCE, "ANNOUNCE_ID": "fatal", "BUOY_SUPERVISORD_CONF": str(conf),
           "BUOY_ETCD_ENDPOINTS": "https://127.0.0.1:1", "BUOY_ETCD_CA": str(tmp_path / "no.pem")}
    res = subprocess.run([sys.executable, "-m", "buoy.ops.supervise", "--", "sleep", "60"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    log = res.stdout + res.stderr
    assert "gave up: announce entered FATAL state" in log
    assert "announce could not be kept running: stopping the container (exit code 1)" in log
    assert "BUOY_ETCD_CA: cannot be loaded" in log
