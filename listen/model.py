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
    refused: tuple[str, ...] = field(default=(), compare=False)  # paths that lost a clash

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


class ParsedView:
    """The parsed /services view, re-parsing only the keys whose revision changed."""

    def __init__(self, keys: KeyLayout) -> None:
        self.keys = keys
        self._cache: dict[str, tuple[int, Entry | Problem]] = {}

    def parse(self, view: Mapping[str, KeyValue]) -> tuple[list[Entry], list[Problem],
                                                           dict[str, int]]:
        """Entries, problems, and each path's earliest create revision (its claim's age)."""
        cache: dict[str, tuple[int, Entry | Problem]] = {}
        entries: list[Entry] = []
        problems: list[Problem] = []
        created: dict[str, int] = {}
        for key, kv in view.items():
            hit = self._cache.get(key)
            if hit is None or hit[0] != kv.mod_revision:
                hit = (kv.mod_revision, parse_record(kv, self.keys))
            cache[key] = hit
            item = hit[1]
            if isinstance(item, Problem):
                problems.append(item)
                continue
            entries.append(item)
            path_text = str(item[0])
            created[path_text] = min(created.get(path_text, kv.create_revision),
                                     kv.create_revision)
        self._cache = cache
        return entries, problems, created


def vhost_of(path: AnnouncePath, suffix: str) -> str:
    """NAME when there is one, else `<service>.<env>.<app>` + suffix."""
    return path.name or f"{path.service}.{path.env}.{path.app}{suffix}"


def backend_name(mode: Mode, path: AnnouncePath) -> str:
    # `_` never occurs in a label or host name, so the name is unambiguous.
    return f"{mode}_" + "_".join(path.segments)


def claims(routing: Routing) -> dict[str, str]:
    """What each routed service holds: `host <vhost>` or `port <port>` → its path."""
    out = {f"host {b.vhost}": b.path for b in routing.http if b.vhost}
    out.update({f"port {b.bind_port}": b.path for b in routing.tcp if b.bind_port})
    return out


def build_routing(entries: Iterable[Entry], *, vhost_suffix: str = "",
                  reserved_ports: Iterable[int] = (), created: Mapping[str, int] | None = None,
                  incumbents: Mapping[str, str] | None = None) -> Routing:
    """Group instances by (path, type); settle virtual host and port clashes.

    First come keeps the name: the service routed now (`incumbents`, from `claims` of the
    applied routing) keeps its host or port; otherwise the path whose first key etcd
    created first (`created`) wins, and only then the lexically first path. The loser is
    left out and named in `errors`; the other services are unaffected.
    """
    created = created or {}
    incumbents = incumbents or {}
    groups: dict[tuple[str, Mode], list[Entry]] = {}
    for path, rec in entries:
        mode: Mode = "http" if rec.type == "HTTP" else "tcp"
        groups.setdefault((str(path), mode), []).append((path, rec))

    def claim(group: tuple[str, Mode]) -> str:
        path, first = groups[group][0]
        return (f"host {vhost_of(path, vhost_suffix)}" if group[1] == "http"
                else f"port {first.port}")

    def order(group: tuple[str, Mode]) -> tuple[int, float, str, str]:
        held = incumbents.get(claim(group)) == group[0]
        return (0 if held else 1, created.get(group[0], float("inf")), *group)

    backends: list[Backend] = []
    pins: list[Pin] = []
    errors: list[str] = []
    refused: list[str] = []
    taken: dict[str, str] = {f"port {p}": "the HTTP frontend" for p in reserved_ports}
    for group in sorted(groups, key=order):
        path_text, mode = group
        members = sorted(groups[group], key=lambda e: e[1].id)
        path, first = members[0]
        name, what = backend_name(mode, path), claim(group)
        if what in taken:
            kind = "vhost" if mode == "http" else "port"
            errors.append(f"{kind} clash: {path_text} wants {what.replace('port', 'TCP port')}, "
                          f"already routed to {taken[what]}; {path_text} is not routed")
            refused.append(path_text)
            continue
        taken[what] = path_text
        servers = tuple(Server(r.id, r.ip, r.ext_port, 1 if r.weight is None else r.weight)
                        for _, r in members)
        if mode == "http":
            check = next((r.check for _, r in members if r.check and r.check != "tcp"), None)
            vhost = vhost_of(path, vhost_suffix)
            backends.append(Backend(name, path_text, "http", vhost=vhost, check=check,
                                    servers=servers))
            pins += _pins(vhost, members)
        else:
            backends.append(Backend(name, path_text, "tcp", bind_port=first.port, servers=servers))
    pins = [p for p in pins if f"host {p.host}" not in taken]
    return Routing(tuple(sorted(backends, key=lambda b: b.name)),
                   tuple(sorted(pins, key=lambda p: p.host)), tuple(errors), tuple(refused))


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
