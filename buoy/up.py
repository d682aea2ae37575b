"""`buoy up`: the whole single-host stack under supervisord, in the foreground.

It runs an etcd of its own (data under the user's state directory) unless
`--etcd` names one, `buoy register` for the local Docker, `buoy listen` with its
HAProxy frontend on `--http-port`, and `buoy dns`. A status line shows each
program's state whenever it changes. Ctrl-C (or SIGTERM) stops everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import xmlrpc.client
from http.client import HTTPConnection
from pathlib import Path
from types import FrameType
from typing import Any

import click

from buoy.cli_common import SettingError, positive_int, setting
from buoy.keys import KeyLayout
from buoy.settings import parse_endpoints
from buoy.up_config import UpConfig, render_supervisord


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "buoy"


class _UnixHTTPConnection(HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        import socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(2)
        self.sock.connect(self._path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host: Any) -> HTTPConnection:
        return _UnixHTTPConnection(self._path)


def program_states(socket_path: Path) -> dict[str, str]:
    """Each program's state from supervisord's XML-RPC interface ({} while it is not up)."""
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(str(socket_path)))
    try:
        infos: Any = proxy.supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error):
        return {}
    return {str(i["name"]): str(i["statename"]) for i in infos}


def status_line(states: dict[str, str], config: UpConfig) -> str:
    parts = " | ".join(f"{name} {state}" for name, state in states.items())
    return (f"buoy up: {parts}  —  http://{config.bind}:{config.http_port}  "
            f"dns {config.bind}:{config.dns_port}  etcd {config.endpoints}")


@click.command()
@click.option("--http-port", envvar="BUOY_HTTP_PORT", default="80", show_default=True,
              help="Port of the HAProxy HTTP frontend.")
@click.option("--dns-port", envvar="BUOY_DNS_PORT", default="5353", show_default=True,
              help="Port of buoy dns (UDP and TCP).")
@click.option("--bind", envvar="BUOY_BIND", default="127.0.0.1", show_default=True,
              help="Address the frontend and DNS listen on (0.0.0.0 to expose them).")
@click.option("--etcd", "etcd", envvar="BUOY_UP_ETCD", default=None,
              help="Use this etcd (endpoints list) instead of starting one.")
@click.option("--etcd-port", envvar="BUOY_UP_ETCD_PORT", default="2379", show_default=True,
              help="Client port of the embedded etcd (its peer port is the next one).")
@click.option("--listen-path", envvar="LISTEN_PATH", default="/services/internal",
              show_default=True, help="What the frontend routes (comma-separated /services paths).")
@click.option("--host-ip", envvar="BUOY_HOST_IP", default=None,
              help="The address register publishes [default: the default-route IPv4].")
@click.option("--network", envvar="BUOY_NETWORK", default=None,
              help="Register containers by their IP on this Docker network (register --internal) "
                   "instead of their published ports.")
@click.option("--zone", envvar="BUOY_DNS_ZONE", default="buoy.internal.", show_default=True)
@click.option("--extra-zone", "extra_zones", multiple=True,
              help="Extra DNS zones to answer for (virtual hosts), repeatable.")
@click.option("--prefix", envvar="BUOY_PREFIX", default="", help="Global key prefix.")
@click.option("--state-dir", envvar="BUOY_UP_STATE_DIR", default=None,
              help="Where etcd data, HAProxy state and supervisord's files live "
                   "[default: $XDG_STATE_HOME/buoy or ~/.local/state/buoy].")
def up(http_port: str, dns_port: str, bind: str, etcd: str | None, etcd_port: str,
       listen_path: str, host_ip: str | None, network: str | None, zone: str,
       extra_zones: tuple[str, ...], prefix: str, state_dir: str | None) -> int:
    """Run the single-host stack (etcd, register, listen + HAProxy, dns) in the foreground."""
    state = Path(state_dir) if state_dir else default_state_dir()
    port = setting(lambda: positive_int("BUOY_UP_ETCD_PORT", etcd_port, maximum=65534))
    keys = setting(lambda: KeyLayout(prefix))
    paths = tuple(p.strip() for p in listen_path.split(",") if p.strip())
    for path in paths:
        setting(lambda p=path: keys.services_watch_prefix(p))  # type: ignore[misc]
    if etcd:
        setting(lambda: parse_endpoints(etcd))
    config = UpConfig(
        state_dir=state.resolve(), python=sys.executable,
        etcd_binary=shutil.which("etcd"), etcd_endpoints=etcd or None,
        etcd_port=port, etcd_peer_port=port + 1, bind=bind,
        http_port=setting(lambda: positive_int("BUOY_HTTP_PORT", http_port, maximum=65535)),
        dns_port=setting(lambda: positive_int("BUOY_DNS_PORT", dns_port, maximum=65535)),
        listen_paths=paths, host_ip=host_ip, network=network or None, zone=zone,
        prefix=keys.prefix, extra_zones=extra_zones)
    if config.etcd_endpoints is None and config.etcd_binary is None:
        raise SettingError("BUOY_UP_ETCD: no etcd binary found; install etcd-server or pass --etcd")
    return run(config)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when `buoy up` dies, even by SIGKILL (Linux prctl)."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(config: UpConfig) -> int:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    conf = config.state_dir / "supervisord.conf"
    conf.write_text(render_supervisord(config))
    proc = subprocess.Popen([config.python, "-m", "supervisor.supervisord", "-c", str(conf)],
                            preexec_fn=_die_with_parent)
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            click.echo("buoy up: stopping", err=True)
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    shown = ""
    while proc.poll() is None:
        states = program_states(config.socket_path)
        line = status_line(states, config) if states else ""
        if line and line != shown:
            click.echo(line, err=True)
            shown = line
        time.sleep(1)
    click.echo("buoy up: stopped", err=True)
    return 0 if stopping else (proc.returncode or 1)
