"""What it takes to go from the applied Routing to the wanted one (pure).

Either a reload (the set of backends, their hosts, ports or checks changed) or a
list of runtime operations on servers and pins, which HAProxy takes without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from buoy.listen.model import Pin, Routing, Server

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
class Plan:
    reload: bool
    servers: tuple[ServerOp, ...] = ()
    pins: tuple[PinOp, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.reload and not self.servers and not self.pins


def plan(applied: Routing | None, wanted: Routing) -> Plan:
    if applied is None or applied.structure() != wanted.structure():
        return Plan(reload=True)
    ops: list[ServerOp] = []
    old_backends = applied.by_name()
    for b in wanted.backends:
        if old_backends[b.name] is b:
            continue  # the same group, not built again: nothing changed
        old = {s.name: s for s in old_backends[b.name].servers}
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
    return Plan(False, tuple(ops), tuple(plan_pins(applied, wanted)))


def plan_pins(applied: Routing, wanted: Routing) -> list[PinOp]:
    old = {p.host: p for p in applied.pins}
    new = {p.host: p for p in wanted.pins}
    out = [PinOp("remove", old[h]) for h in sorted(old.keys() - new.keys())]
    for h in sorted(new):
        if h not in old:
            out.append(PinOp("add", new[h]))
        elif old[h] != new[h]:
            out.append(PinOp("set", new[h]))
    return out
