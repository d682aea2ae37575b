"""`buoy supervise` and supervisord.conf: the pure env decision, the event listener, and
real supervisord runs on this host (stop order, app exit stops everything)."""

from __future__ import annotations

import io
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

from buoy.keys import KeyLayout
from buoy.records import AnnouncePath, RecordError
from buoy.supervise import app_gone, listen_for_app_exit, supervisor_env

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "supervisord.conf"
PY = "/opt/buoy/bin/python"
ANNOUNCE = {"ANNOUNCE_PATH": "/internal/app1/dev/web/ghost.example", "PORT": "8000", "TYPE": "HTTP"}


# The pure part ---------------------------------------------------------------------------

def test_app_only_runs_the_app_and_its_exit_listener() -> None:
    env = supervisor_env(["--", "python3", "-m", "http.server", "a b"], {}, PY)
    assert env["BUOY_RUN_APP"] == "true"
    assert env["BUOY_RUN_ANNOUNCE"] == "false" and env["BUOY_RUN_LISTEN"] == "false"
    assert env["BUOY_APP_COMMAND"] == "python3 -m http.server 'a b'"
    assert env["BUOY_SUPERVISE_PYTHON"] == PY


def test_paths_switch_announce_and_listen_on() -> None:
    env = supervisor_env([], {**ANNOUNCE, "LISTEN_PATH": "/services/internal/app1/dev"}, PY)
    assert (env["BUOY_RUN_APP"], env["BUOY_RUN_ANNOUNCE"], env["BUOY_RUN_LISTEN"]) == \
        ("false", "true", "true")
    assert env["BUOY_APP_COMMAND"] == "true"  # never started, but supervisord needs a value


def test_announce_stop_wait_covers_the_drain() -> None:
    assert supervisor_env(["x"], {**ANNOUNCE, "ANNOUNCE_DRAIN": "2.5"}, PY)[
        "BUOY_ANNOUNCE_STOPWAIT"] == "8"
    assert supervisor_env(["x"], ANNOUNCE, PY)["BUOY_ANNOUNCE_STOPWAIT"] == "5"


def test_defaults_and_normalised_choices() -> None:
    env = supervisor_env(["x"], {"BUOY_APP_STOPSIGNAL": "sigint"}, PY)
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
])
def test_bad_settings_are_named(argv: list[str], env: dict[str, str], setting: str) -> None:
    with pytest.raises(RecordError) as err:
        supervisor_env(argv, env, PY)
    assert err.value.field == setting


def test_every_variable_the_config_uses_is_provided() -> None:
    used = set(re.findall(r"%\(ENV_(\w+)\)s", CONF.read_text()))
    provided = supervisor_env(["x"], {**ANNOUNCE, "LISTEN_PATH": "/services/internal"}, PY)
    assert used and used <= set(provided)


def test_announce_stops_first_and_listen_last() -> None:
    import configparser

    parser = configparser.RawConfigParser()
    parser.read(CONF)
    priority = {s.split(":", 1)[1]: int(parser.get(s, "priority")) for s in parser.sections()
                if s.startswith("program:")}
    # supervisord stops groups from the highest priority number to the lowest.
    assert priority["announce"] > priority["app"] > priority["listen"]


def test_app_gone_only_for_the_app_program() -> None:
    exited = {"eventname": "PROCESS_STATE_EXITED"}
    assert app_gone(exited, "processname:app groupname:app from_state:RUNNING expected:0 pid:7")
    assert app_gone({"eventname": "PROCESS_STATE_FATAL"}, "processname:app groupname:app")
    assert not app_gone(exited, "processname:announce groupname:announce pid:8")
    assert not app_gone({"eventname": "PROCESS_STATE_STOPPED"}, "processname:app groupname:app")


def test_event_listener_protocol() -> None:
    def event(name: str, body: str) -> str:
        return f"ver:3.0 server:supervisor serial:1 pool:app-exit poolserial:1 " \
               f"eventname:{name} len:{len(body)}\n{body}"

    stdin = io.StringIO(event("PROCESS_STATE_EXITED", "processname:listen groupname:listen pid:3")
                        + event("PROCESS_STATE_EXITED", "processname:app groupname:app pid:4"))
    stdout = io.StringIO()
    stops: list[int] = []
    listen_for_app_exit(stdin, stdout, lambda: stops.append(1))
    assert stops == [1]
    assert stdout.getvalue() == "READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"


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
from buoy.settings import EtcdSettings
from buoy.store import EtcdStore
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "buoy", "supervise", "--config", str(conf), "--",
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


def test_app_exit_stops_the_container_and_withdraws(
        supervised: dict[str, object], etcd: EtcdServer) -> None:
    from conftest import store_for

    proc, key, out = supervised["proc"], str(supervised["key"]), Path(str(supervised["out"]))
    assert isinstance(proc, subprocess.Popen)
    store = store_for(etcd)
    try:
        wait_for(lambda: store.get(key) is not None, 20, what="announce key")
        out.with_suffix(".exit").write_text("go")  # the app exits 3 on its own
        assert proc.wait(30) == 0
        # Gone long before its 60 s TTL: announce was stopped, not killed.
        assert store.get(key) is None
    finally:
        store.close()
    assert "app gone event=PROCESS_STATE_EXITED" in Path(str(supervised["log"])).read_text()
