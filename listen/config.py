"""listen's settings as one frozen, validated object (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import RecordError, check_hostname, check_ip, check_label, check_port


@dataclass(frozen=True)
class ListenConfig:
    watch_prefixes: tuple[str, ...]
    http_bind: str = "*:80"
    http_port: int = 80
    tcp_bind: str = "127.0.0.1"
    vhost_suffix: str = ""
    template: Path | None = None
    state_dir: Path = Path("/var/lib/buoy/listen")
    haproxy_bin: str = "/usr/sbin/haproxy"
    haproxy_socket: Path | None = None
    drain_timeout: float = 30.0
    min_quiet: float = 0.05
    max_quiet: float = 0.5
    advertise_ip: str | None = None
    listen_id: str = "listen"
    dns_ttl: int = 15
    once: bool = False
    dry_run: bool = False
    etcd_timeout: float = 5.0  # --once: how long to wait for etcd before giving up
    # The mass-removal guard (listen/guard.py). `confirm` 0 turns it off: the default for a
    # Listener built in code; `buoy listen` defaults to 10 s.
    max_drop: float = 50.0
    confirm: float = 0.0
    # HTTPS (listen/https.py): off unless https_bind is set
    https_bind: str | None = None
    https_port: int = 443
    default_cert: Path | None = None
    cert_dir: Path | None = None
    acme_directory: str | None = None  # ACME issuing is on when set
    acme_email: str | None = None
    acme_ca: Path | None = None  # CA bundle for the ACME server's own HTTPS
    acme_hosts: tuple[str, ...] = ()
    acme_all: bool = False
    acme_renew: float = 1 / 3  # renew when less than this share of the lifetime is left

    @property
    def config_path(self) -> Path:
        return self.state_dir / "haproxy.cfg"

    @property
    def pin_path(self) -> Path:
        return self.state_dir / "pins.map"

    @property
    def host_path(self) -> Path:
        return host_map_beside(self.pin_path)

    @property
    def map_paths(self) -> tuple[Path, Path]:
        """The pin map and the host map, in the order of `Rendered.maps()`."""
        return self.pin_path, self.host_path

    @property
    def master_socket(self) -> Path:
        return self.haproxy_socket or self.state_dir / "master.sock"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "haproxy.log"

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def acme_socket(self) -> Path:
        """listen's HTTP-01 responder, which HAProxy reaches for /.well-known/acme-challenge/."""
        return self.state_dir / "acme.sock"


def host_map_beside(pin_map: Path) -> Path:
    """The host map lives beside the pin map (in the state dir)."""
    return pin_map.with_name("hosts.map")


def parse_listen_paths(text: str | None, keys: KeyLayout) -> tuple[str, ...]:
    """LISTEN_PATH: comma-separated /services paths → etcd prefixes (deduplicated)."""
    if not text or not text.strip():
        raise RecordError("LISTEN_PATH", "is required (e.g. /services/internal/app1/dev)", text)
    out: list[str] = []
    for part in text.split(","):
        if part.strip():
            prefix = keys.services_watch_prefix(part.strip())
            if prefix not in out:
                out.append(prefix)
    return tuple(out)


def parse_http_bind(text: str, name: str = "BUOY_HTTP_BIND") -> tuple[str, int]:
    """`*:80`, `:8080`, `127.0.0.1:8080` or `[::1]:80` → (HAProxy bind text, port)."""
    rule = "must be [*|IP]:PORT, e.g. *:80 or 127.0.0.1:8080"
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise RecordError(name, rule, text)
    port = check_port(name, port_text)
    host = host.strip("[]")
    if host in ("", "*"):
        return f"*:{port}", port
    ip = check_ip(name, host)
    return (f"ipv6@{ip}:{port}" if ":" in ip else f"{ip}:{port}"), port


def parse_tcp_bind(text: str) -> str:
    ip = check_ip("BUOY_TCP_BIND", text.strip())
    return f"ipv6@{ip}" if ":" in ip else ip


def parse_vhost_suffix(text: str) -> str:
    """`` or `.example.com` (a leading dot is added when missing)."""
    name = text.strip().strip(".").lower()
    if not name:
        return ""
    return "." + check_hostname("BUOY_VHOST_SUFFIX", name)


def parse_listen_id(text: str) -> str:
    return check_label("BUOY_LISTEN_ID", text.strip().lower().split(".")[0])


def parse_acme_hosts(text: str | None) -> tuple[str, ...]:
    """BUOY_ACME_HOSTS: comma-separated virtual hosts that get certificates through ACME."""
    names = [p.strip().lower().rstrip(".") for p in (text or "").split(",") if p.strip()]
    return tuple(dict.fromkeys(check_hostname("BUOY_ACME_HOSTS", n) for n in names))


def parse_acme_directory(text: str) -> str:
    url = text.strip()
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        raise RecordError("BUOY_ACME_DIRECTORY", "must be an http(s) URL", text)
    return url
