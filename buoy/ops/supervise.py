"""`buoy supervise -- CMD...`: the buoy images' entrypoint, and PID 1 of their containers.

supervisord cannot include a program conditionally and refuses to start when a
`%(ENV_X)s` it uses is unset, so this decides what runs (the app when a command is
given, announce when ANNOUNCE_PATH is set, listen when LISTEN_PATH is set), validates
those settings before anything starts (exit 2, one line naming the setting) and fills
in every variable supervisord.conf uses. The validation runs in a forked child while
PID 1 loads supervisor (without ssl), so PID 1 never carries the validation's imports
and both halves of the start-up run side by side. PID 1 then runs supervisord *inside
itself* (`buoy.ops.supervisord_run`), which:

- spawns every program at once instead of after its first one-second tick;
- when the app exits (or cannot start), stops everything in order (announce first,
  so the record is withdrawn) and exits with the app's exit code (128+N for a signal),
  so `docker wait` and `--restart on-failure` see it; a `docker stop` exits 0;
- when announce or listen cannot be kept running (FATAL after supervisord's retries),
  stops the container with exit code 1 so Docker's restart policy decides.

No event listener process is needed. The image's ENTRYPOINT is `python -m
buoy.ops.supervise --` (no click); `buoy supervise` does the same from the command line.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from buoy.etcd.records import RecordError

# Only os and sys at the top: `python -m buoy.ops.supervise` (the process that stays, as PID 1)
# must not carry the validation's imports; they load in a forked child (see `main`).
DEFAULT_CONFIG = "/etc/buoy/supervisord.conf"
STOP_SIGNALS = ("TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2")
LOG_LEVELS = ("critical", "error", "warn", "info", "debug", "trace", "blather")
# What the app program's stop may take before supervisord kills it, and listen's.
DEFAULT_STOPWAIT = "10"
# announce revokes its lease (one etcd request, bounded by its timeout) before draining.
ANNOUNCE_STOP_MARGIN = 5


def _error(name: str, rule: str, value: object) -> RecordError:
    from buoy.etcd.records import RecordError

    return RecordError(name, rule, value)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _stopwait(name: str, text: str) -> str:
    try:
        value = int(text.strip())
    except ValueError:
        raise _error(name, "must be a whole number of seconds from 1 to 3600", text) from None
    if not 1 <= value <= 3600:
        raise _error(name, "must be a whole number of seconds from 1 to 3600", text)
    return str(value)


def _drain(text: str) -> float:
    import math

    try:
        value = float(text.strip())
    except ValueError:
        raise _error("ANNOUNCE_DRAIN", "must be a number of seconds >= 0", text) from None
    if not (math.isfinite(value) and 0 <= value <= 3600):
        raise _error("ANNOUNCE_DRAIN", "must be a number of seconds from 0 to 3600", text)
    return value


def _choice(name: str, text: str, allowed: Sequence[str], *, upper: bool) -> str:
    value = text.strip().upper() if upper else text.strip().lower()
    value = value.removeprefix("SIG") if upper else value
    if value not in allowed:
        raise _error(name, f"must be one of {', '.join(allowed)}", text)
    return value


def _check_agents(env: Mapping[str, str], run_announce: bool, run_listen: bool) -> None:
    """Validate announce's and listen's own settings now, so a bad one stops the container
    at once with their message instead of a restart loop inside it."""
    import socket

    from buoy.announce.config import build_record
    from buoy.etcd.keys import KeyLayout
    from buoy.etcd.records import DEFAULT_ZONE, check_instance

    if run_announce:
        path, record = build_record(
            path=env.get("ANNOUNCE_PATH"), port=env.get("PORT"), type_=env.get("TYPE"),
            instance_id=env.get("ANNOUNCE_ID") or socket.gethostname(),
            check=env.get("CHECK") or None)
        check_instance(path, record.id, env.get("BUOY_DNS_ZONE") or DEFAULT_ZONE)
    if run_announce or run_listen:
        from buoy.etcd.settings import EtcdSettings

        EtcdSettings.from_strings(
            env.get("BUOY_ETCD_ENDPOINTS") or "http://127.0.0.1:2379",
            ca_cert=env.get("BUOY_ETCD_CA") or None, cert=env.get("BUOY_ETCD_CERT") or None,
            key=env.get("BUOY_ETCD_KEY") or None, user=env.get("BUOY_ETCD_USER") or None,
            password=env.get("BUOY_ETCD_PASSWORD") or None)
    if run_listen:
        from buoy.listen.config import parse_listen_paths

        parse_listen_paths(env.get("LISTEN_PATH"), KeyLayout(env.get("BUOY_PREFIX", "")))


def supervisor_env(argv: Sequence[str], env: Mapping[str, str]) -> dict[str, str]:
    """The variables supervisord.conf needs, from the app's argv and the container's env (pure).

    Raises RecordError naming the setting when a setting is invalid or nothing would run.
    """
    import math
    import shlex

    command = list(argv[1:] if argv[:1] == ["--"] else argv)
    run_app = bool(command)
    run_announce = bool(env.get("ANNOUNCE_PATH", "").strip())
    run_listen = bool(env.get("LISTEN_PATH", "").strip())
    if not (run_app or run_announce or run_listen):
        raise _error("LISTEN_PATH", "nothing to run: give a command, ANNOUNCE_PATH or "
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
    }


def validate(argv: Sequence[str], config: str, *, need_config: bool = True) -> dict[str, str]:
    """The variables for supervisord; raises RecordError naming a bad setting."""
    from buoy.etcd.records import RecordError

    added = supervisor_env(argv, os.environ)
    if need_config and not os.path.isfile(config):
        raise RecordError("BUOY_SUPERVISORD_CONF", "must be a readable file", config)
    return added


def main(argv: Sequence[str]) -> int:
    """PID 1 of the images: validate in a forked child while this process loads supervisor,
    then run supervisord here. The validation's imports never enter this process, and the
    two halves of the start-up run side by side. Errors: one line, exit 2."""
    config = os.environ.get("BUOY_SUPERVISORD_CONF") or DEFAULT_CONFIG
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's coverage is its effect
        os.close(read)
        code = 0
        try:
            added = validate(argv, config)
            os.write(write, "\0".join(f"{k}={v}" for k, v in added.items()).encode())
        except ValueError as exc:  # RecordError
            print(f"buoy: error: {exc}", file=sys.stderr, flush=True)
            code = 2
        except BaseException as exc:  # noqa: BLE001 - reported, then the parent exits 2
            print(f"buoy: error: validation failed: {exc!r}", file=sys.stderr, flush=True)
            code = 2
        os._exit(code)
    os.close(write)
    from buoy.ops.supervisord_run import load_supervisor, run_supervisord

    load_supervisor()
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(child, 0)
    if status != 0:
        return 2
    for item in b"".join(chunks).decode().split("\0"):
        key, _, value = item.partition("=")
        os.environ[key] = value  # supervisord reads %(ENV_...)s from its environment
    return run_supervisord(config)


def _click_command() -> Any:
    import click

    @click.command("supervise", context_settings={"ignore_unknown_options": True,
                                                  "allow_interspersed_args": False})
    @click.option("--config", envvar="BUOY_SUPERVISORD_CONF", default=DEFAULT_CONFIG,
                  show_default=True, help="The supervisord.conf to run.")
    @click.option("--print-env", is_flag=True,
                  help="Print the variables supervisord would get, one KEY=value a line, and exit.")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED)
    def supervise(config: str, print_env: bool, command: tuple[str, ...]) -> int:
        """Run the app CMD with announce and listen under supervisord (the images' entrypoint)."""
        from buoy.etcd.records import RecordError

        if print_env:
            try:
                added = validate(command, config, need_config=False)
            except RecordError as exc:
                print(f"buoy: error: {exc}", file=sys.stderr, flush=True)
                return 2
            for key, value in sorted(added.items()):
                print(f"{key}={value}")
            return 0
        # The same PID 1 as the images: a fresh Python without click.
        os.environ["BUOY_SUPERVISORD_CONF"] = config
        sys.stdout.flush()
        sys.stderr.flush()
        args = list(command[1:] if command[:1] == ("--",) else command)
        os.execv(sys.executable, [sys.executable, "-m", "buoy.ops.supervise", "--", *args])

    return supervise


def __getattr__(name: str) -> Any:
    """`buoy.ops.supervise.supervise`, the click command, is built on first use, so the image's
    PID 1 (`python -m buoy.ops.supervise`) never loads click."""
    if name == "supervise":
        command = _click_command()
        globals()["supervise"] = command
        return command
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
