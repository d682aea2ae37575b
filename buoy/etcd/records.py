"""Announce and service records: validation and JSON round-trips (DESIGN.md)."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HOST_ID_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$")
CHECK_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/%?=&+:@!$,;*()-]{0,255}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
TYPES = ("HTTP", "TCP")
ServiceType = Literal["HTTP", "TCP"]


class RecordError(ValueError):
    """A field broke a rule; the message names the field and the rule."""

    def __init__(self, field_name: str, rule: str, value: object = None) -> None:
        self.field = field_name
        self.rule = rule
        shown = repr(value) if value is not None else "nothing"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field_name}: {rule} (got {shown})")


def check_label(field_name: str, value: object) -> str:
    """A lower-case DNS label: [a-z0-9]([a-z0-9-]*[a-z0-9])?, at most 63 characters."""
    if not isinstance(value, str) or not LABEL_RE.fullmatch(value):
        raise RecordError(
            field_name,
            "must be a lower-case DNS label [a-z0-9]([a-z0-9-]*[a-z0-9])?, 1-63 characters",
            value,
        )
    return value


def check_hostname(field_name: str, value: object) -> str:
    """Dot-separated lower-case DNS labels, at most 253 characters."""
    rule = "must be lower-case DNS labels separated by dots, at most 253 characters"
    if not isinstance(value, str) or not value or len(value) > 253:
        raise RecordError(field_name, rule, value)
    for label in value.split("."):
        if not LABEL_RE.fullmatch(label):
            raise RecordError(field_name, rule, value)
    return value


def check_port(field_name: str, value: object) -> int:
    """An integer 1-65535; digit strings are accepted (environment values)."""
    rule = "must be an integer from 1 to 65535"
    if isinstance(value, bool):
        raise RecordError(field_name, rule, value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise RecordError(field_name, rule, value)
    return value


def check_type(value: object) -> ServiceType:
    if value not in TYPES:
        raise RecordError("TYPE", "must be HTTP or TCP", value)
    return value  # type: ignore[return-value]


def check_check(value: object) -> str:
    """CHECK is `tcp` or an HTTP path without spaces, quotes or `#`."""
    if isinstance(value, str) and (value == "tcp" or CHECK_PATH_RE.fullmatch(value)):
        return value
    raise RecordError(
        "CHECK", "must be 'tcp' or an HTTP path starting with / (no spaces, quotes or #)", value
    )


def check_weight(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 256:
        raise RecordError("WEIGHT", "must be an integer from 0 to 256", value)
    return value


def check_ip(field_name: str, value: object) -> str:
    try:
        return str(ipaddress.ip_address(value))  # type: ignore[arg-type,unused-ignore]
    except ValueError:
        raise RecordError(field_name, "must be an IPv4 or IPv6 address", value) from None


@dataclass(frozen=True)
class AnnouncePath:
    """`/<scope>/<app>/<env>/<service>[/<name>]`; NAME may hold dots (a host name)."""

    scope: str
    app: str
    env: str
    service: str
    name: str | None = None

    @classmethod
    def parse(cls, text: object, field_name: str = "ANNOUNCE_PATH") -> AnnouncePath:
        rule = (
            "must be /<scope>/<app>/<env>/<service>[/<name>] with lower-case DNS labels"
            " (name may hold dots)"
        )
        if not isinstance(text, str) or not text.startswith("/") or text.endswith("/"):
            raise RecordError(field_name, rule, text)
        parts = text[1:].split("/")
        if len(parts) not in (4, 5):
            raise RecordError(field_name, rule + f"; it has {len(parts)} segments", text)
        try:
            for part in parts[:4]:
                check_label(field_name, part)
            if len(parts) == 5:
                check_hostname(field_name, parts[4])
        except RecordError:
            raise RecordError(field_name, rule, text) from None
        return cls(*parts)

    @property
    def segments(self) -> tuple[str, ...]:
        base = (self.scope, self.app, self.env, self.service)
        return base + ((self.name,) if self.name else ())

    def __str__(self) -> str:
        return "/" + "/".join(self.segments)


KNOWN_ANNOUNCE = ("ID", "APP", "ENV", "SERVICE", "NAME", "PORT", "TYPE",
                  "SCOPE", "CHECK", "WEIGHT", "VERSION", "HTTPS_REDIRECT", "HSTS", "ACME")
HSTS_MAX = 2 * 365 * 86400  # HSTS max-age seconds, at most two years
KNOWN_SERVICE = KNOWN_ANNOUNCE + ("IP", "EXT_PORT", "HOST")


@dataclass(frozen=True, kw_only=True)
class AnnounceRecord:
    """What a container says about itself (`/announce/<path>/<ID>`)."""

    id: str
    app: str
    env: str
    service: str
    port: int
    type: ServiceType
    name: str | None = None
    scope: str | None = None
    check: str | None = None
    weight: int | None = None
    version: str | None = None
    # HTTPS (listen --https-bind): redirect HTTP to HTTPS, send HSTS with this max-age,
    # get the certificate through ACME
    https_redirect: bool | None = None
    hsts: int | None = None
    acme: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_label("ID", self.id)
        check_label("APP", self.app)
        check_label("ENV", self.env)
        check_label("SERVICE", self.service)
        check_port("PORT", self.port)
        check_type(self.type)
        if self.name is not None:
            check_hostname("NAME", self.name)
        if self.scope is not None:
            check_label("SCOPE", self.scope)
        if self.check is not None:
            check_check(self.check)
        if self.weight is not None:
            check_weight(self.weight)
        if self.version is not None and not (
            isinstance(self.version, str) and VERSION_RE.fullmatch(self.version)
        ):
            raise RecordError("VERSION", "must match [A-Za-z0-9][A-Za-z0-9._+-]{0,63}", self.version)
        for name, flag in (("HTTPS_REDIRECT", self.https_redirect), ("ACME", self.acme)):
            if flag is not None and not isinstance(flag, bool):
                raise RecordError(name, "must be true or false", flag)
        if self.hsts is not None and (isinstance(self.hsts, bool) or not isinstance(self.hsts, int)
                                      or not 0 <= self.hsts <= HSTS_MAX):
            raise RecordError("HSTS", f"must be a max-age in seconds, 0-{HSTS_MAX}", self.hsts)

    @classmethod
    def for_path(cls, path: AnnouncePath, id: str, port: int, type: ServiceType,
                 **optional: Any) -> AnnounceRecord:
        """The record an instance at `path` announces."""
        return cls(id=id, app=path.app, env=path.env, service=path.service, name=path.name,
                   scope=path.scope, port=port, type=type, **optional)

    def path(self, scope: str | None = None) -> AnnouncePath:
        """The announce path; `scope` (from the key) wins over SCOPE."""
        chosen = scope or self.scope
        if chosen is None:
            raise RecordError("SCOPE", "is needed to build the path", None)
        return AnnouncePath(chosen, self.app, self.env, self.service, self.name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update({"ID": self.id, "APP": self.app, "ENV": self.env, "SERVICE": self.service,
                    "PORT": self.port, "TYPE": self.type})
        for key, value in (("NAME", self.name), ("SCOPE", self.scope), ("CHECK", self.check),
                           ("WEIGHT", self.weight), ("VERSION", self.version),
                           ("HTTPS_REDIRECT", self.https_redirect), ("HSTS", self.hsts),
                           ("ACME", self.acme)):
            if value is not None:
                out[key] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnnounceRecord:
        return cls(**_announce_kwargs(data, KNOWN_ANNOUNCE))

    @classmethod
    def from_json(cls, text: str | bytes) -> AnnounceRecord:
        return cls.from_dict(load_json_object(text))


@dataclass(frozen=True, kw_only=True)
class ServiceRecord(AnnounceRecord):
    """An announce record plus where to reach it (`/services/<path>/<ID>`)."""

    ip: str
    ext_port: int
    host: str

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "ip", check_ip("IP", self.ip))
        check_port("EXT_PORT", self.ext_port)
        if not isinstance(self.host, str) or not HOST_ID_RE.fullmatch(self.host):
            raise RecordError("HOST", "must match [A-Za-z0-9][A-Za-z0-9._-]{0,252}", self.host)

    @classmethod
    def from_announce(cls, record: AnnounceRecord, *, ip: str, ext_port: int,
                      host: str) -> ServiceRecord:
        fields = {k: getattr(record, k) for k in (
            "id", "app", "env", "service", "port", "type", "name", "scope", "check",
            "weight", "version", "https_redirect", "hsts", "acme", "extra")}
        return cls(ip=ip, ext_port=ext_port, host=host, **fields)

    def announce(self) -> AnnounceRecord:
        """The announce part alone."""
        return AnnounceRecord.from_dict(
            {k: v for k, v in self.to_dict().items() if k not in ("IP", "EXT_PORT", "HOST")})

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update({"IP": self.ip, "EXT_PORT": self.ext_port, "HOST": self.host})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceRecord:
        kwargs = _announce_kwargs(data, KNOWN_SERVICE)
        for key in ("IP", "EXT_PORT", "HOST"):
            if key not in data:
                raise RecordError(key, "is required", None)
        return cls(ip=data["IP"], ext_port=data["EXT_PORT"], host=data["HOST"], **kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> ServiceRecord:
        return cls.from_dict(load_json_object(text))


def load_json_object(text: str | bytes) -> Mapping[str, Any]:
    """Parse a record's JSON; anything but an object is a RecordError naming `record`."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError("record", "must be a JSON object", str(exc)) from None
    if not isinstance(data, dict):
        raise RecordError("record", "must be a JSON object", data)
    return data


def _announce_kwargs(data: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    for key in ("ID", "APP", "ENV", "SERVICE", "PORT", "TYPE"):
        if key not in data:
            raise RecordError(key, "is required", None)
    port = data["PORT"]
    if isinstance(port, str):  # a digit string is what the seed's shell agents wrote
        port = check_port("PORT", port)
    return {
        "id": data["ID"], "app": data["APP"], "env": data["ENV"], "service": data["SERVICE"],
        "port": port, "type": data["TYPE"], "name": data.get("NAME") or None,
        "scope": data.get("SCOPE"), "check": data.get("CHECK"), "weight": data.get("WEIGHT"),
        "version": data.get("VERSION"), "https_redirect": data.get("HTTPS_REDIRECT"),
        "hsts": data.get("HSTS"), "acme": data.get("ACME"),
        "extra": {k: v for k, v in data.items() if k not in known},
    }


DNS_NAME_MAX = 253
DEFAULT_ZONE = "buoy.internal."  # of instance DNS names (DESIGN.md; skydns.records too)


def check_instance(path: AnnouncePath, instance_id: str, zone: str) -> str:
    """The one rule for an instance that announce (at start) and register (per record) share:
    the ID is a DNS label and its DNS name `<ID>.<path reversed>.<zone>` is a valid name of
    at most 253 characters. Returns that name (with a trailing dot).

    The error names ANNOUNCE_ID for a bad ID and ANNOUNCE_PATH for a name that is too long
    (the path is what makes it long).
    """
    check_label("ID", instance_id)
    zone_name = zone.strip().rstrip(".").lower()
    check_hostname("BUOY_DNS_ZONE", zone_name)
    name = ".".join((instance_id, *reversed(path.segments), zone_name))
    if len(name) > DNS_NAME_MAX:
        raise RecordError("ANNOUNCE_PATH", f"with ID {instance_id} makes the DNS name "
                          f"{len(name)} characters long (at most {DNS_NAME_MAX}, zone "
                          f"{zone_name}.)", str(path))
    return name + "."
