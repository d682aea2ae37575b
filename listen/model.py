"""The routing model: /services records → what HAProxy should route (pure, no I/O).

Every name and value that reaches the HAProxy config comes from here and was
validated on the way in: names are built from DNS labels, IPs passed check_ip,
ports are ints. Server names are the instance IDs, so the same instance always
gets the same server name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from buoy.etcd.keys import KeyError_, KeyLayout
from buoy.etcd.records import AnnouncePath, RecordError, ServiceRecord
from buoy.etcd.store import KeyValue

Mode = Literal["http", "tcp"]


@dataclass(frozen=True, order=True, slots=True)
class Server:
    """One instance: server `name` (its ID) at ip:port."""

    name: str
    ip: str
    port: int
    weight: int = 1

    @property
    def addr(self) -> str:
        """The address as HAProxy reads it (IPv6 needs the ipv6@ form)."""
        return f"ipv6@{self.ip}:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Pin:
    """Host `<ID>.<vhost>` → that one instance."""

    host: str
    ip: str
    port: int

    @property
    def value(self) -> str:
        return f"{self.ip}|{self.port}"


@dataclass(frozen=True)
class Backend:
    """One service group: an HTTP backend (by vhost) or a TCP listen section (by port)."""

    name: str
    path: str
    mode: Mode
    vhost: str | None = None
    bind_port: int | None = None
    check: str | None = None
    servers: tuple[Server, ...] = ()
    # HTTPS policy (listen/https.py), applied through maps: never a reason to reload
    https_redirect: bool = False
    hsts: int | None = None
    acme: bool = False
    # its instances' pins, as routed (a pin whose host is another service's vhost is not)
    pins: tuple[Pin, ...] = ()

    def shape(self) -> tuple[object, ...]:
        """What a reload is needed to change (everything but the servers)."""
        return (self.name, self.mode, self.vhost, self.bind_port, self.check)


@dataclass(frozen=True)
class Routing:
    """What HAProxy routes. `pins` is every pin; `pins_in_backends` says they are exactly
    the backends' own (`Backend.pins`), so that a change is planned from the changed
    backends alone. A Routing is not changed once built: what derives from it is kept."""

    backends: tuple[Backend, ...] = ()
    pins: tuple[Pin, ...] = ()
    errors: tuple[str, ...] = field(default=(), compare=False)
    refused: tuple[str, ...] = field(default=(), compare=False)  # paths that lost a clash
    pins_in_backends: bool = field(default=False, compare=False)

    @cached_property
    def _structure(self) -> tuple[tuple[object, ...], ...]:
        return tuple(b.shape() for b in self.backends)

    def structure(self) -> tuple[tuple[object, ...], ...]:
        return self._structure

    @cached_property
    def _by_name(self) -> dict[str, Backend]:
        return {b.name: b for b in self.backends}

    def by_name(self) -> dict[str, Backend]:
        return dict(self._by_name)

    def backend(self, name: str) -> Backend | None:
        return self._by_name.get(name)

    @property
    def http(self) -> tuple[Backend, ...]:
        return tuple(b for b in self.backends if b.mode == "http")

    @property
    def tcp(self) -> tuple[Backend, ...]:
        return tuple(b for b in self.backends if b.mode == "tcp")

    def vhosts(self) -> list[str]:
        return sorted(b.vhost for b in self.http if b.vhost)


@dataclass(frozen=True)
class Problem:
    """A record that was skipped: logged once per key and revision."""

    key: str
    revision: int
    message: str


Entry = tuple[AnnouncePath, ServiceRecord]


def parse_view(view: Mapping[str, KeyValue], keys: KeyLayout) -> tuple[list[Entry], list[Problem]]:
    """Validate every key and value; the bad ones become Problems, never entries."""
    entries: list[Entry] = []
    problems: list[Problem] = []
    for key in sorted(view):
        item = parse_record(view[key], keys)
        if isinstance(item, Problem):
            problems.append(item)
        else:
            entries.append(item)
    return entries, problems


def parse_record(kv: KeyValue, keys: KeyLayout) -> Entry | Problem:
    """One /services key and value → its entry, or the Problem that skips it."""
    try:
        path, instance_id = keys.parse_service_key(kv.key)
        rec = ServiceRecord.from_json(kv.value)
        mismatch = [f for f, a, b in (("ID", rec.id, instance_id), ("APP", rec.app, path.app),
                                      ("ENV", rec.env, path.env),
                                      ("SERVICE", rec.service, path.service),
                                      ("NAME", rec.name, path.name)) if a != b]
        if mismatch:
            raise RecordError(mismatch[0], "does not match the key", kv.key)
    except (KeyError_, RecordError) as exc:
        return Problem(kv.key, kv.mod_revision, str(exc))
    return path, rec
