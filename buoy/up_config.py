"""What `buoy up` runs, as a supervisord configuration (pure: settings in, text out)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("etcd", "register", "listen", "dns")


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

    @property
    def endpoints(self) -> str:
        return self.etcd_endpoints or f"http://127.0.0.1:{self.etcd_port}"

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "supervisor.sock"

    def programs(self) -> dict[str, list[str]]:
        """Program name → argv, in start order."""
        buoy = [self.python, "-m", "buoy"]
        out: dict[str, list[str]] = {}
        if self.etcd_endpoints is None:
            peer = f"http://127.0.0.1:{self.etcd_peer_port}"
            client = f"http://127.0.0.1:{self.etcd_port}"
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
        dns = [*buoy, "dns", "--listen", f"{self.bind}:{self.dns_port}", "--zone", self.zone]
        for zone in self.extra_zones:
            dns += ["--extra-zone", zone]
        out["dns"] = dns
        return out

    def environment(self) -> dict[str, str]:
        env = {"BUOY_ETCD_ENDPOINTS": self.endpoints, "PYTHONUNBUFFERED": "1"}
        if self.prefix:
            env["BUOY_PREFIX"] = self.prefix
        return env


def render_supervisord(config: UpConfig) -> str:
    """The supervisord.conf for `config`; every program logs to supervisord's stdout."""
    env = ",".join(f'{k}="{v}"' for k, v in sorted(config.environment().items()))
    lines = [
        "[supervisord]", "nodaemon=true", "logfile=/dev/null", "logfile_maxbytes=0",
        f"pidfile={config.state_dir / 'supervisord.pid'}", "loglevel=warn", "",
        "[unix_http_server]", f"file={config.socket_path}", "chmod=0700", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", f"serverurl=unix://{config.socket_path}", "",
    ]
    for priority, (name, argv) in enumerate(config.programs().items(), start=1):
        lines += [
            f"[program:{name}]",
            "command=" + " ".join(shlex.quote(a).replace("%", "%%") for a in argv),
            f"priority={priority * 10}", "autostart=true", "autorestart=true",
            "startsecs=1", "startretries=100", "stopsignal=TERM", "stopwaitsecs=10",
            "redirect_stderr=true", "stdout_logfile=/dev/stdout", "stdout_logfile_maxbytes=0",
            f"environment={env}", "",
        ]
    return "\n".join(lines)
