"""What `buoy up` runs, as a supervisord configuration (pure: settings in, text out).

Each program logs to a file of its own under `<state-dir>/logs/`; `buoy up` reads
those files and writes whole lines, so the output stays readable in a file.
Every program gets its own metrics port (or none) explicitly, so a
`BUOY_METRICS_PORT` in `buoy up`'s environment never reaches three agents at once.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("etcd", "register", "listen", "dns")
AGENTS = ("register", "listen", "dns")  # the ones with /healthz and /metrics
LOG_MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class UpConfig:
    """The single-host stack: an embedded etcd (unless one is given), register, listen, dns."""

    state_dir: Path
    python: str
    etcd_binary: str | None
    etcd_endpoints: str | None          # None: run our own etcd
    etcd_port: int = 2379
    etcd_peer_port: int = 2380
    bind: str = "127.0.0.1"
    http_port: int = 80
    dns_port: int = 5353
    listen_paths: tuple[str, ...] = ("/services/internal",)
    host_ip: str | None = None
    network: str | None = None          # register --internal on this Docker network
    zone: str = "buoy.internal."
    prefix: str = ""
    extra_zones: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: int = 0               # base: register, listen, dns get it, +1, +2 (0: off)
    metrics_bind: str = "127.0.0.1"
    container_ips: tuple[str, ...] = ()  # Docker network gateways the embedded etcd serves
    https_port: int = 0                 # listen's HTTPS frontend (0: none)
    cert_dir: Path | None = None        # listen --cert-dir

    @property
    def endpoints(self) -> str:
        return self.etcd_endpoints or f"http://127.0.0.1:{self.etcd_port}"

    @property
    def container_endpoints(self) -> str:
        """The embedded etcd as containers reach it ("" when there is none for them)."""
        if self.etcd_endpoints is not None:
            return ""
        return ",".join(f"http://{ip}:{self.etcd_port}" for ip in self.container_ips)

    def metrics_ports(self) -> dict[str, int]:
        """Agent → its /healthz and /metrics port ({} when metrics are off)."""
        if not self.metrics_port:
            return {}
        return {name: self.metrics_port + i for i, name in enumerate(AGENTS)}

    def ports(self) -> list[tuple[str, str, str, int]]:
        """Every port the stack will listen on: (setting, tcp|udp, address, port)."""
        out = [("BUOY_HTTP_PORT", "tcp", self.bind, self.http_port),
               ("BUOY_DNS_PORT", "udp", self.bind, self.dns_port),
               ("BUOY_DNS_PORT", "tcp", self.bind, self.dns_port)]
        if self.https_port:
            out.append(("BUOY_HTTPS_PORT", "tcp", self.bind, self.https_port))
        if self.etcd_endpoints is None:
            for ip in ("127.0.0.1", *self.container_ips):
                out.append(("BUOY_UP_ETCD_PORT", "tcp", ip, self.etcd_port))
            out.append(("BUOY_UP_ETCD_PORT", "tcp", "127.0.0.1", self.etcd_peer_port))
        out += [("BUOY_UP_METRICS_PORT", "tcp", self.metrics_bind, port)
                for port in self.metrics_ports().values()]
        return out

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "supervisor.sock"

    def programs(self) -> dict[str, list[str]]:
        """Program name → argv, in start order."""
        buoy = [self.python, "-m", "buoy"]
        out: dict[str, list[str]] = {}
        if self.etcd_endpoints is None:
            peer = f"http://127.0.0.1:{self.etcd_peer_port}"
            client = ",".join(f"http://{ip}:{self.etcd_port}"
                              for ip in ("127.0.0.1", *self.container_ips))
            out["etcd"] = [
                self.etcd_binary or "etcd", "--name", "buoy-up",
                "--data-dir", str(self.state_dir / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"buoy-up={peer}", "--logger", "zap", "--log-level", "warn"]
        register = [*buoy, "register"]
        if self.host_ip:
            register += ["--host-ip", self.host_ip]
        if self.network:
            register += ["--internal", "--network", self.network]
        out["register"] = register + ["--zone", self.zone]
        out["listen"] = [*buoy, "listen", "--listen-path", ",".join(self.listen_paths),
                         "--http-bind", f"{self.bind}:{self.http_port}",
                         "--state-dir", str(self.state_dir / "listen"),
                         "--advertise-ip", self.bind if self.bind != "0.0.0.0" else "127.0.0.1"]
        if self.https_port:
            out["listen"] += ["--https-bind", f"{self.bind}:{self.https_port}"]
        if self.cert_dir is not None:
            out["listen"] += ["--cert-dir", str(self.cert_dir)]
        dns = [*buoy, "dns", "--listen", f"{self.bind}:{self.dns_port}", "--zone", self.zone]
        for zone in self.extra_zones:
            dns += ["--extra-zone", zone]
        out["dns"] = dns
        return out

    def environment(self, program: str | None = None) -> dict[str, str]:
        env = {"BUOY_ETCD_ENDPOINTS": self.endpoints, "PYTHONUNBUFFERED": "1"}
        if self.prefix:
            env["BUOY_PREFIX"] = self.prefix
        if program in AGENTS:
            env["BUOY_METRICS_PORT"] = str(self.metrics_ports().get(program, 0))
            env["BUOY_METRICS_BIND"] = self.metrics_bind
        return env


def render_supervisord(config: UpConfig) -> str:
    """The supervisord.conf for `config`; every program logs to a file of its own."""
    lines = [
        "[supervisord]", "nodaemon=true", "logfile=/dev/null", "logfile_maxbytes=0",
        f"pidfile={config.state_dir / 'supervisord.pid'}", "loglevel=warn", "",
        "[unix_http_server]", f"file={config.socket_path}", "chmod=0700", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", f"serverurl=unix://{config.socket_path}", "",
    ]
    for priority, (name, argv) in enumerate(config.programs().items(), start=1):
        env = ",".join(f'{k}="{v}"' for k, v in sorted(config.environment(name).items()))
        lines += [
            f"[program:{name}]",
            "command=" + " ".join(shlex.quote(a).replace("%", "%%") for a in argv),
            f"priority={priority * 10}",
            # with an etcd of its own, `buoy up` starts the agents once etcd answers
            f"autostart={'false' if name in AGENTS and config.etcd_endpoints is None else 'true'}",
            "autorestart=true",
            "startsecs=1", "startretries=100", "stopsignal=TERM", "stopwaitsecs=10",
            "redirect_stderr=true",
            "stdout_logfile=" + str(config.log_path(name)).replace("%", "%%"),
            f"stdout_logfile_maxbytes={LOG_MAX_BYTES}", "stdout_logfile_backups=1",
            f"environment={env}", "",
        ]
    return "\n".join(lines)


def status_line(states: dict[str, str], config: UpConfig) -> str:
    """`buoy up: dns RUNNING | ...  —  where everything is` (one line)."""
    parts = " | ".join(f"{name} {state}" for name, state in states.items())
    line = (f"buoy up: {parts}  —  http://{config.bind}:{config.http_port}  "
            f"dns {config.bind}:{config.dns_port}  etcd {config.endpoints}")
    if config.container_endpoints:
        line += f"  containers' etcd {config.container_endpoints}"
    ports = config.metrics_ports()
    if ports:
        line += "  metrics " + " ".join(f"{name}:{port}" for name, port in ports.items())
    return line


def startup_failure(state: str, exitstatus: int, lines: list[str]) -> str | None:
    """Why a program will never start (its last words), or None while it may still (pure).

    An agent exits 2 on an invalid setting or a port it cannot bind; a program that
    supervisord gave up on (FATAL), or one that died on a taken address, will not
    do better by being restarted.
    """
    if state not in ("BACKOFF", "FATAL", "EXITED"):
        return None
    said = [ln for ln in lines if "buoy: error:" in ln or "address already in use" in ln.lower()]
    if exitstatus == 2 or said or state == "FATAL":
        if said:
            return said[-1].strip()
        return lines[-1].strip() if lines else f"exited with status {exitstatus}"
    return None
