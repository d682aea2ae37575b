"""`buoy supervise -- CMD...`: the buoy images' entrypoint.

supervisord cannot include a program conditionally and refuses to start when a
`%(ENV_X)s` it uses is unset, so this command decides what runs (the app when a
command is given, announce when ANNOUNCE_PATH is set, listen when LISTEN_PATH is
set), validates those settings before anything starts, fills in every variable
supervisord.conf uses, and execs `supervisord -n -c <config>`.

`python -m buoy.supervise` is the `app-exit` event listener of that config: when
the app exits (or cannot start), it stops supervisord, which withdraws the
announcement first, so the container stops instead of announcing a dead app.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO

import click

from buoy.cli_common import setting
from buoy.keys import KeyLayout
from buoy.records import RecordError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/buoy/supervisord.conf"
STOP_SIGNALS = ("TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2")
LOG_LEVELS = ("critical", "error", "warn", "info", "debug", "trace", "blather")
# What the app program's stop may take before supervisord kills it, and listen's.
DEFAULT_STOPWAIT = "10"
# announce revokes its lease (one etcd request, bounded by its timeout) before draining.
ANNOUNCE_STOP_MARGIN = 5


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _stopwait(name: str, text: str) -> str:
    try:
        value = int(text.strip())
    except ValueError:
        raise RecordError(name, "must be a whole number of seconds from 1 to 3600", text) from None
    if not 1 <= value <= 3600:
        raise RecordError(name, "must be a whole number of seconds from 1 to 3600", text)
    return str(value)


def _drain(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise RecordError("ANNOUNCE_DRAIN", "must be a number of seconds >= 0", text) from None
    if not (math.isfinite(value) and 0 <= value <= 3600):
        raise RecordError("ANNOUNCE_DRAIN", "must be a number of seconds from 0 to 3600", text)
    return value


def _choice(name: str, text: str, allowed: Sequence[str], *, upper: bool) -> str:
    value = text.strip().upper() if upper else text.strip().lower()
    value = value.removeprefix("SIG") if upper else value
    if value not in allowed:
        raise RecordError(name, f"must be one of {', '.join(allowed)}", text)
    return value


def _check_agents(env: Mapping[str, str], run_announce: bool, run_listen: bool) -> None:
    """Validate announce's and listen's own settings now, so a bad one stops the container
    at once with their message instead of a restart loop inside it."""
    from announce.config import build_record

    if run_announce:
        build_record(path=env.get("ANNOUNCE_PATH"), port=env.get("PORT"), type_=env.get("TYPE"),
                     instance_id="check", check=env.get("CHECK") or None)
    if run_listen:
        from listen.config import parse_listen_paths

        parse_listen_paths(env.get("LISTEN_PATH"), KeyLayout(env.get("BUOY_PREFIX", "")))


def supervisor_env(argv: Sequence[str], env: Mapping[str, str], python: str) -> dict[str, str]:
    """The variables supervisord.conf needs, from the app's argv and the container's env (pure).

    Raises RecordError naming the setting when a setting is invalid or nothing would run.
    """
    command = list(argv[1:] if argv[:1] == ["--"] else argv)
    run_app = bool(command)
    run_announce = bool(env.get("ANNOUNCE_PATH", "").strip())
    run_listen = bool(env.get("LISTEN_PATH", "").strip())
    if not (run_app or run_announce or run_listen):
        raise RecordError("LISTEN_PATH", "nothing to run: give a command, ANNOUNCE_PATH or "
                          "LISTEN_PATH (the haproxy image needs LISTEN_PATH)", env.get("LISTEN_PATH"))
    _check_agents(env, run_announce, run_listen)
    drain = _drain(env.get("ANNOUNCE_DRAIN", "0") or "0")
    return {
        # supervisord splits `command` like a shell; a % in the value is not expanded again.
        "BUOY_APP_COMMAND": shlex.join(command) if run_app else "true",
        "BUOY_RUN_APP": _flag(run_app),
        "BUOY_RUN_ANNOUNCE": _flag(run_announce),
        "BUOY_RUN_LISTEN": _flag(run_listen),
        "BUOY_ANNOUNCE_STOPWAIT": str(math.ceil(drain) + ANNOUNCE_STOP_MARGIN),
        "BUOY_APP_STOPWAIT": _stopwait("BUOY_APP_STOPWAIT",
                                       env.get("BUOY_APP_STOPWAIT") or DEFAULT_STOPWAIT),
        "BUOY_LISTEN_STOPWAIT": _stopwait("BUOY_LISTEN_STOPWAIT",
                                          env.get("BUOY_LISTEN_STOPWAIT") or DEFAULT_STOPWAIT),
        "BUOY_APP_STOPSIGNAL": _choice("BUOY_APP_STOPSIGNAL", env.get("BUOY_APP_STOPSIGNAL") or "TERM",
                                       STOP_SIGNALS, upper=True),
        "BUOY_SUPERVISOR_LOGLEVEL": _choice("BUOY_SUPERVISOR_LOGLEVEL",
                                            env.get("BUOY_SUPERVISOR_LOGLEVEL") or "info",
                                            LOG_LEVELS, upper=False),
        "BUOY_SUPERVISE_PYTHON": python,
    }


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("--config", envvar="BUOY_SUPERVISORD_CONF", default=DEFAULT_CONFIG, show_default=True,
              help="The supervisord.conf to run.")
@click.option("--print-env", is_flag=True,
              help="Print the variables supervisord would get, one KEY=value a line, and exit.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def supervise(config: str, print_env: bool, command: tuple[str, ...]) -> int:
    """Run the app CMD with announce and listen under supervisord (the images' entrypoint)."""
    added = setting(lambda: supervisor_env(command, os.environ, sys.executable))
    if print_env:
        for key, value in sorted(added.items()):
            click.echo(f"{key}={value}")
        return 0
    if not os.path.isfile(config):
        setting(lambda: _raise(RecordError("BUOY_SUPERVISORD_CONF", "must be a readable file", config)))
    sys.stdout.flush()
    os.execvpe("supervisord", ["supervisord", "-n", "-c", config], {**os.environ, **added})
    return 0  # not reached: exec replaced this process


def _raise(exc: Exception) -> None:
    raise exc


# The app-exit event listener -------------------------------------------------------------

def app_gone(headers: Mapping[str, str], payload: str) -> bool:
    """True when the event says the app program exited or failed to start (pure)."""
    if headers.get("eventname") not in ("PROCESS_STATE_EXITED", "PROCESS_STATE_FATAL"):
        return False
    fields = dict(token.split(":", 1) for token in payload.split() if ":" in token)
    return fields.get("processname") == "app"


def listen_for_app_exit(stdin: IO[str], stdout: IO[str], stop: Callable[[], None]) -> None:
    """supervisord's event listener protocol: READY, read one event, answer OK; until EOF."""
    while True:
        stdout.write("READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return
        headers = dict(token.split(":", 1) for token in line.split() if ":" in token)
        payload = stdin.read(int(headers.get("len", "0")))
        if app_gone(headers, payload):
            print(f"buoy supervise: app gone event={headers.get('eventname')} "
                  f"({payload.strip()}): stopping the container", file=sys.stderr, flush=True)
            stop()
        stdout.write("RESULT 2\nOK")
        stdout.flush()


if __name__ == "__main__":
    # Our parent is supervisord: SIGTERM makes it stop every program in order.
    listen_for_app_exit(sys.stdin, sys.stdout, lambda: os.kill(os.getppid(), signal.SIGTERM))
