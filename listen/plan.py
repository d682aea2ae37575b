"""What it takes to go from the applied Routing to the wanted one (pure).

Either a reload (a backend came, or its host, port or check changed, or a TCP service
went) or a list of runtime operations on servers, pins and the host map, which HAProxy
takes without one. An HTTP service that goes is taken out of the host map and its servers
drain; its backend stays in the running HAProxy, unrouted, until the next reload.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from buoy.listen.model import Backend, Pin, Routing, Server

OpKind = Literal["add", "remove", "move", "weight"]


@dataclass(frozen=True)
class ServerOp:
    kind: OpKind
    backend: str
    server: Server


@dataclass(frozen=True)
class PinOp:
    kind: Literal["add", "remove", "set"]
    pin: Pin


@dataclass(frozen=True)
class HostOp:
    """A virtual host taken out of the host map (its service went)."""

    kind: Literal["remove"]
    vhost: str
    backend: str


@dataclass(frozen=True)
class Plan:
    reload: bool
    servers: tuple[ServerOp, ...] = ()
    pins: tuple[PinOp, ...] = ()
    hosts: tuple[HostOp, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.reload and not self.servers and not self.pins and not self.hosts


def plan(applied: Routing | None, wanted: Routing) -> Plan:
    """Backends are compared by identity first: a group not built again is skipped, so a
    change costs what it touches (plus one pass over the backends)."""
    if applied is None:
        return Plan(reload=True)
    gone: list[Backend] = []
    pairs: Iterable[tuple[Backend, Backend]]
    if len(applied.backends) == len(wanted.backends):
        pairs = zip(applied.backends, wanted.backends, strict=True)
    else:  # services went: HTTP ones leave without a reload, nothing may have come
        gone = [b for b in applied.backends if wanted.backend(b.name) is None]
        if any(b.mode != "http" or not b.vhost for b in gone) or \
                len(applied.backends) - len(gone) != len(wanted.backends):
            return Plan(reload=True)
        # every wanted backend is an applied one (the counts say so): pair them by name
        pairs = ((applied.backend(b.name) or b, b) for b in wanted.backends)
    changed: list[tuple[Backend, Backend]] = []
    for before, after in pairs:
        if before is after:
            continue  # the same group, not built again: nothing changed
        if before.shape() != after.shape():
            return Plan(reload=True)
        changed.append((before, after))
    changed += [(b, replace(b, servers=(), pins=())) for b in gone]
    hosts = tuple(HostOp("remove", b.vhost, b.name) for b in gone if b.vhost)
    ops: list[ServerOp] = []
    for was_backend, b in changed:
        old = {s.name: s for s in was_backend.servers}
        new = {s.name: s for s in b.servers}
        for name in sorted(old.keys() - new.keys()):
            ops.append(ServerOp("remove", b.name, old[name]))
        for name in sorted(new):
            s, was = new[name], old.get(name)
            if was is None:
                ops.append(ServerOp("add", b.name, s))
            elif (was.ip, was.port) != (s.ip, s.port):
                ops.append(ServerOp("move", b.name, s))
            elif was.weight != s.weight:
                ops.append(ServerOp("weight", b.name, s))
    if applied.pins_in_backends and wanted.pins_in_backends:
        pins = [op for old_b, new_b in changed for op in diff_pins(old_b.pins, new_b.pins)]
    else:
        pins = diff_pins(applied.pins, wanted.pins)
    return Plan(False, tuple(ops), tuple(pins), hosts)


def diff_pins(applied: Sequence[Pin], wanted: Sequence[Pin]) -> list[PinOp]:
    old = {p.host: p for p in applied}
    new = {p.host: p for p in wanted}
    out = [PinOp("remove", old[h]) for h in sorted(old.keys() - new.keys())]
    for h in sorted(new):
        if h not in old:
            out.append(PinOp("add", new[h]))
        elif old[h] != new[h]:
            out.append(PinOp("set", new[h]))
    return out
