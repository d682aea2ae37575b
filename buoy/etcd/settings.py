"""Connection settings for etcd, shared by every agent (built by the CLI layer)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from buoy.etcd.records import RecordError

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"


def positive_float(name: str, text: object) -> float:
    try:
        value = float(str(text))
    except ValueError:
        raise RecordError(name, "must be a positive number", text) from None
    if not value > 0:
        raise RecordError(name, "must be a positive number", text)
    return value


def positive_int(name: str, text: object, *, minimum: int = 1, maximum: int = 10**9) -> int:
    rule = f"must be an integer from {minimum} to {maximum}"
    try:
        value = int(str(text))
    except ValueError:
        raise RecordError(name, rule, text) from None
    if not minimum <= value <= maximum:
        raise RecordError(name, rule, text)
    return value


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    secure: bool


@dataclass(frozen=True)
class EtcdSettings:
    """Where etcd is and how to authenticate; validated at construction."""

    endpoints: tuple[Endpoint, ...]
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise RecordError("BUOY_ETCD_ENDPOINTS", "needs at least one endpoint", "")
        if any(e.secure for e in self.endpoints) and not self.ca_cert:
            raise RecordError("BUOY_ETCD_CA", "is required for https:// endpoints", None)
        if bool(self.cert) != bool(self.key):
            raise RecordError("BUOY_ETCD_CERT", "and BUOY_ETCD_KEY must be given together",
                              self.cert or self.key)
        if bool(self.user) != bool(self.password):
            raise RecordError("BUOY_ETCD_USER", "and BUOY_ETCD_PASSWORD must be given together",
                              self.user)

    @classmethod
    def from_strings(cls, endpoints: str = DEFAULT_ENDPOINTS, **kwargs: object) -> EtcdSettings:
        return cls(endpoints=parse_endpoints(endpoints), **kwargs)  # type: ignore[arg-type]

    @property
    def urls(self) -> str:
        return ",".join(f"{'https' if e.secure else 'http'}://{e.host}:{e.port}"
                        for e in self.endpoints)


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """`http://a:2379,https://b:2379` → endpoints; a bare `host:port` means http."""
    rule = "must be a comma-separated list of http(s)://host:port"
    out = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if "://" not in item:
            item = "http://" + item
        try:
            parts = urlsplit(item)
            port = parts.port or 2379
        except ValueError:
            raise RecordError("BUOY_ETCD_ENDPOINTS", rule, text) from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise RecordError("BUOY_ETCD_ENDPOINTS", rule, text)
        out.append(Endpoint(parts.hostname, port, parts.scheme == "https"))
    if not out:
        raise RecordError("BUOY_ETCD_ENDPOINTS", rule, text)
    return tuple(out)
