"""`buoy up`: the whole single-host stack under supervisord, in the foreground.

It runs an etcd of its own (data under the user's state directory) unless
`--etcd` names one, `buoy register` for the local Docker, `buoy listen` with its
HAProxy frontend on `--http-port`, and `buoy dns`. Before starting anything it
checks that every port is free; a program that cannot start (an invalid setting,
a taken port) stops the stack with its one line and exit code 2. The programs'
logs are written as whole lines, each prefixed with the program's name; the
status line is kept at the bottom of a terminal, and written as an ordinary line
whenever a state changes otherwise. Ctrl-C (or SIGTERM) stops everything.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client
from collections import deque
from http.client import HTTPConnection
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import click

from buoy.cli_common import SettingError, setting
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import check_ip
from buoy.etcd.settings import parse_endpoints, positive_int
from buoy.ops.up_config import AGENTS, UpConfig, render_supervisord, startup_failure, status_line

DOCKER_SOCKET = "/var/run/docker.sock"
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LINE_MAX = 65536


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "buoy"


class _UnixHTTPConnection(HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(2)
        self.sock.connect(self._path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host: Any) -> HTTPConnection:
        return _UnixHTTPConnection(self._path)


def program_infos(socket_path: Path) -> list[dict[str, Any]]:
    """supervisord's process info for every program ([] while it is not up)."""
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(str(socket_path)))
    try:
        return list(proxy.supervisor.getAllProcessInfo())  # type: ignore[arg-type]
    except (OSError, xmlrpc.client.Error):
        return []


def start_programs(socket_path: Path, names: tuple[str, ...]) -> None:
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(str(socket_path)))
    for name in names:
        try:
            proxy.supervisor.startProcess(name, False)
        except (OSError, xmlrpc.client.Error):
            pass  # already started, or supervisord is stopping: its state says so


def etcd_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return b'"true"' in resp.read()
    except (OSError, ValueError):
        return False


def docker_gateway(network: str, docker_socket: str = DOCKER_SOCKET) -> str:
    """The IPv4 gateway (the host's address) of a Docker network; raises OSError."""
    if not NETWORK_RE.fullmatch(network):
        raise OSError(f"not a Docker network name: {network!r}")
    conn = _UnixHTTPConnection(docker_socket)
    try:
        conn.request("GET", f"/networks/{network}")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise OSError(f"Docker answered {resp.status} for network {network}")
    for item in (json.loads(body).get("IPAM") or {}).get("Config") or []:
        gateway = str(item.get("Gateway") or "")
        if gateway and ":" not in gateway:
            return gateway
        subnet = str(item.get("Subnet") or "")
        if subnet and ":" not in subnet:  # the default bridge names no gateway: Docker
            return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))  # takes .1
    raise OSError(f"network {network} has no IPv4 gateway")


def container_ips(networks: list[str], echo: Any) -> tuple[str, ...]:
    """The gateways of `networks` this host can listen on; the others are reported."""
    out: list[str] = []
    for network in networks:
        try:
            ip = docker_gateway(network)
            with socket.socket() as probe:
                probe.bind((ip, 0))
        except (OSError, ValueError) as exc:
            echo(f"buoy up: etcd is not offered to containers on network {network}: {exc}")
            continue
        if ip not in out:
            out.append(ip)
    return tuple(out)


def check_ports(config: UpConfig) -> None:
    """Refuse at start (exit 2) any port the stack needs that is taken."""
    for name, proto, host, port in config.ports():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with socket.socket(family, kind) as sock:
            if proto == "tcp":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise SettingError(f"{name}: cannot listen on {host}:{port}/{proto}: "
                                   f"{exc.strerror or exc}") from None


class LogTail:
    """Whole new lines of one program's log file (follows a rotation)."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path
        self.offset, self.inode = 0, -1
        self.partial = b""
        self.recent: deque[str] = deque(maxlen=30)

    def read(self) -> list[str]:
        try:
            st = self.path.stat()
            if st.st_ino != self.inode or st.st_size < self.offset:
                self.inode, self.offset, self.partial = st.st_ino, 0, b""
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        if len(self.partial) > LINE_MAX:  # a line without end: show it in pieces
            lines, self.partial = [*lines, self.partial], b""
        text = [ln.decode(errors="replace").rstrip("\r") for ln in lines]
        self.recent.extend(text)
        return text


class Output:
    """One writer for every line: logs to stdout; the status line at a terminal's bottom,
    or as an ordinary line on each change when the output is a file or a pipe."""

    def __init__(self, out: TextIO = sys.stdout, status: TextIO = sys.stderr) -> None:
        self.out, self.status = out, status
        self.live = status.isatty()
        self.shown = ""  # the status line as written
        self.last = ""   # ... and before it was cut to the terminal's width

    def line(self, text: str) -> None:
        if self.live and self.shown:
            self.status.write("\r\033[K")
            self.status.flush()
        self.out.write(text + "\n")
        self.out.flush()
        if self.live and self.shown:
            self.status.write(self.shown)
            self.status.flush()

    def set_status(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.live:  # one screen line, or \r could not take it back
            text = text[:max(20, shutil.get_terminal_size().columns - 1)]
            self.status.write("\r\033[K" + text)
            self.status.flush()
            self.shown = text
        else:
            self.shown = text
            self.line(text)

    def close(self) -> None:
        if self.live and self.shown:
            self.status.write("\n")
            self.status.flush()


@click.command()
@click.option("--http-port", envvar="BUOY_HTTP_PORT", default="80", show_default=True,
              help="Port of the HAProxy HTTP frontend.")
@click.option("--https-port", envvar="BUOY_HTTPS_PORT", default="0", show_default=True,
              help="Port of the HAProxy HTTPS frontend (0: none); certificates from "
                   "--cert-dir and /certs in etcd.")
@click.option("--cert-dir", envvar="BUOY_CERT_DIR", default=None,
              help="listen's directory of <vhost>.pem certificates (chain + key).")
@click.option("--dns-port", envvar="BUOY_DNS_PORT", default="5353", show_default=True,
              help="Port of buoy dns (UDP and TCP).")
@click.option("--bind", envvar="BUOY_BIND", default="127.0.0.1", show_default=True,
              help="Address the frontend and DNS listen on (0.0.0.0 to expose them).")
@click.option("--etcd", "etcd", envvar="BUOY_UP_ETCD", default=None,
              help="Use this etcd (endpoints list) instead of starting one.")
@click.option("--etcd-port", envvar="BUOY_UP_ETCD_PORT", default="2379", show_default=True,
              help="Client port of the embedded etcd (its peer port is the next one).")
@click.option("--container-networks", envvar="BUOY_UP_CONTAINER_NETWORKS", default="bridge",
              show_default=True,
              help="Docker networks whose containers may reach the embedded etcd (it also "
                   "listens on their gateway address); --network is added; 'none' for none.")
@click.option("--metrics-port", envvar="BUOY_UP_METRICS_PORT", default="0", show_default=True,
              help="First /healthz and /metrics port: register gets it, listen the next, "
                   "dns the one after (0: none).")
@click.option("--metrics-bind", envvar="BUOY_UP_METRICS_BIND", default="127.0.0.1",
              show_default=True, help="Address the agents' metrics servers listen on.")
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
              help="Where etcd data, HAProxy state, logs and supervisord's files live "
                   "[default: $XDG_STATE_HOME/buoy or ~/.local/state/buoy].")
def up(http_port: str, https_port: str, cert_dir: str | None, dns_port: str, bind: str,
       etcd: str | None, etcd_port: str,
       container_networks: str, metrics_port: str, metrics_bind: str,
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
    metrics = setting(lambda: positive_int("BUOY_UP_METRICS_PORT", metrics_port, minimum=0,
                                           maximum=65533))
    output = Output()
    networks = [n.strip() for n in container_networks.split(",") if n.strip() not in ("", "none")]
    if network and network not in networks:
        networks.append(network)
    config = UpConfig(
        state_dir=state.resolve(), python=sys.executable,
        etcd_binary=shutil.which("etcd"), etcd_endpoints=etcd or None,
        etcd_port=port, etcd_peer_port=port + 1, bind=bind,
        http_port=setting(lambda: positive_int("BUOY_HTTP_PORT", http_port, maximum=65535)),
        dns_port=setting(lambda: positive_int("BUOY_DNS_PORT", dns_port, maximum=65535)),
        listen_paths=paths, host_ip=host_ip, network=network or None, zone=zone,
        prefix=keys.prefix, extra_zones=extra_zones, metrics_port=metrics,
        metrics_bind=setting(lambda: check_ip("BUOY_UP_METRICS_BIND", metrics_bind.strip())),
        container_ips=container_ips(networks, output.line) if not etcd else (),
        https_port=setting(lambda: positive_int("BUOY_HTTPS_PORT", https_port, minimum=0,
                                                maximum=65535)),
        cert_dir=Path(cert_dir).resolve() if cert_dir else None)
    if config.etcd_endpoints is None and config.etcd_binary is None:
        raise SettingError("BUOY_UP_ETCD: no etcd binary found; install etcd-server or pass --etcd")
    check_ports(config)
    return run(config, output)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when `buoy up` dies, even by SIGKILL (Linux prctl)."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(config: UpConfig, output: Output | None = None) -> int:
    out = output or Output()
    logs = config.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tails = {name: LogTail(name, config.log_path(name))
             for name in ("supervisord", *config.programs())}
    for tail in tails.values():
        tail.path.write_bytes(b"")  # this run's lines only
    conf = config.state_dir / "supervisord.conf"
    conf.write_text(render_supervisord(config))
    with config.log_path("supervisord").open("ab") as sink:
        proc = subprocess.Popen([config.python, "-m", "supervisor.supervisord", "-c", str(conf)],
                                stdout=sink, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    stopping, failure = False, ""

    def stop(reason: str = "") -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            out.line(f"buoy up: stopping{reason}")
            proc.send_signal(signal.SIGTERM)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    next_poll = 0.0
    waiting_for_etcd = config.etcd_endpoints is None
    while True:
        exited = proc.poll() is not None
        for name, tail in tails.items():
            for line in tail.read():
                out.line(f"{name} | {line}")
        if exited:
            break
        if time.monotonic() >= next_poll:
            next_poll = time.monotonic() + 1.0
            infos = [] if stopping else program_infos(config.socket_path)
            states = {str(i["name"]): str(i["statename"]) for i in infos}
            if infos:
                out.set_status(status_line(states, config))
            if (waiting_for_etcd and states.get("etcd") == "RUNNING"
                    and etcd_healthy(config.etcd_port)):
                waiting_for_etcd = False
                out.line(f"buoy up: etcd answers; starting {', '.join(AGENTS)}")
                start_programs(config.socket_path, AGENTS)
            for info in infos:
                name = str(info["name"])
                why = startup_failure(str(info["statename"]), int(info.get("exitstatus") or 0),
                                      list(tails[name].recent) if name in tails else [])
                if why and not failure:
                    failure = f"{name} cannot start: {why.split('buoy: error: ', 1)[-1]}"
                    stop(f" ({failure})")
        time.sleep(0.2)
    out.close()
    if failure:
        click.echo(f"buoy: error: {failure}", err=True)
        return 2
    out.line("buoy up: stopped")
    return 0 if stopping else (proc.returncode or 1)
