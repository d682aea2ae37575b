"""The routing model: /services records → what HAProxy should route (pure, no I/O).

Every name and value that reaches the HAProxy config comes from here and was
validated on the way in: names are built from DNS labels, IPs passed check_ip,
ports are ints. Server names are the instance IDs, so the same instance always
gets the same server name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from buoy.keys import KeyError_, KeyLayout
from buoy.records import AnnouncePath, RecordError, ServiceRecord, check_hostname
from buoy.store import KeyValue

Mode = Literal["http", "tcp"]


@dataclass(frozen=True, order=True)
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

    def shape(self) -> tuple[object, ...]:
        """What a reload is needed to change (everything but the servers)."""
        return (self.name, self.mode, self.vhost, self.bind_port, self.check)


@dataclass(frozen=True)
class Pin:
    """Host `<ID>.<vhost>` → that one instance."""

    host: str
    ip: str
    port: int

    @property
    def value(self) -> str:
        return f"{self.ip}|{self.port}"


@dataclass(frozen=True)
class Routing:
    backends: tuple[Backend, ...] = ()
    pins: tuple[Pin, ...] = ()
    errors: tuple[str, ...] = field(default=(), compare=False)

    def structure(self) -> tuple[tuple[object, ...], ...]:
        return tuple(b.shape() for b in self.backends)

    def by_name(self) -> dict[str, Backend]:
        return {b.name: b for b in self.backends}

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
        kv = view[key]
        try:
            path, instance_id = keys.parse_service_key(key)
            rec = ServiceRecord.from_json(kv.value)
            mismatch = [f for f, a, b in (("ID", rec.id, instance_id), ("APP", rec.app, path.app),
                                          ("ENV", rec.env, path.env),
                                          ("SERVICE", rec.service, path.service),
                                          ("NAME", rec.name, path.name)) if a != b]
            if mismatch:
                raise RecordError(mismatch[0], "does not match the key", key)
        except (KeyError_, RecordError) as exc:
            problems.append(Problem(key, kv.mod_revision, str(exc)))
            continue
        entries.append((path, rec))
    return entries, problems


def vhost_of(path: AnnouncePath, suffix: str) -> str:
    """NAME when there is one, else `<service>.<env>.<app>` + suffix."""
    return path.name or f"{path.service}.{path.env}.{path.app}{suffix}"


def backend_name(mode: Mode, path: AnnouncePath) -> str:
    # `_` never occurs in a label or host name, so the name is unambiguous.
    return f"{mode}_" + "_".join(path.segments)


def build_routing(entries: Iterable[Entry], *, vhost_suffix: str = "",
                  reserved_ports: Iterable[int] = ()) -> Routing:
    """Group instances by (path, type); resolve vhost and port clashes deterministically.

    A clash is won by the lexically first path; the loser is left out and named in
    `errors`, and the other services are unaffected.
    """
    groups: dict[tuple[str, Mode], list[Entry]] = {}
    for path, rec in entries:
        mode: Mode = "http" if rec.type == "HTTP" else "tcp"
        groups.setdefault((str(path), mode), []).append((path, rec))
    backends: list[Backend] = []
    pins: list[Pin] = []
    errors: list[str] = []
    taken_hosts: dict[str, str] = {}
    taken_ports: dict[int, str] = {p: "the HTTP frontend" for p in reserved_ports}
    for (path_text, mode), members in sorted(groups.items()):
        members.sort(key=lambda e: e[1].id)
        path, first = members[0]
        servers = tuple(Server(r.id, r.ip, r.ext_port, 1 if r.weight is None else r.weight)
                        for _, r in members)
        check = next((r.check for _, r in members if r.check and r.check != "tcp"), None)
        name = backend_name(mode, path)
        if mode == "http":
            vhost = vhost_of(path, vhost_suffix)
            if vhost in taken_hosts:
                errors.append(f"vhost clash: {path_text} wants host {vhost}, already routed to "
                              f"{taken_hosts[vhost]}; {path_text} is not routed")
                continue
            taken_hosts[vhost] = path_text
            backends.append(Backend(name, path_text, "http", vhost=vhost, check=check,
                                    servers=servers))
            pins += _pins(vhost, members)
        else:
            port = first.port
            if port in taken_ports:
                errors.append(f"port clash: {path_text} wants TCP port {port}, already used by "
                              f"{taken_ports[port]}; {path_text} is not routed")
                continue
            taken_ports[port] = path_text
            backends.append(Backend(name, path_text, "tcp", bind_port=port, servers=servers))
    pins = [p for p in pins if p.host not in taken_hosts]
    return Routing(tuple(sorted(backends, key=lambda b: b.name)),
                   tuple(sorted(pins, key=lambda p: p.host)), tuple(errors))


def _pins(vhost: str, members: list[Entry]) -> list[Pin]:
    out = []
    for _, rec in members:
        host = f"{rec.id}.{vhost}"
        try:
            check_hostname("pinned host", host)
        except RecordError:
            continue  # too long for a host name: this instance simply has no pin
        out.append(Pin(host, rec.ip, rec.ext_port))
    return out
