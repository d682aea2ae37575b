"""What listen's status page shows (pure, no I/O): the applied routing joined with HAProxy's
own view of each server slot, pins, certificates, names refused, held removals, the last
reload and etcd, as one plain dict (the JSON twin, `/status.json`).

HAProxy's view is the CSV of `show stat -1 4 -1` (servers only), keyed by backend and slot
name (`s1`, `s2`, ...); the slot tables (listen/slots.py) say which instance holds a slot,
so a withdrawn instance that still drains is shown too.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from buoy.listen.model import Backend, Routing, Server
from buoy.listen.slots import slot_name
from buoy.ops.health import HealthState, iso, report

if TYPE_CHECKING:
    from buoy.listen.certs import CertificateRow

DAY = 86400.0


@dataclass(frozen=True)
class SlotStat:
    """One server slot as HAProxy reports it."""

    status: str  # HAProxy's words: UP, DOWN, UP 1/2 (going down), MAINT, DRAIN, no check, ...
    addr: str = ""
    weight: int | None = None
    check: str = ""  # check_status: L4OK, L4CON, L7STS, ...
    since: int | None = None  # seconds since the last change of state (lastchg)
    sessions: int = 0  # current connections (scur)


StatTable = dict[tuple[str, str], SlotStat]  # (backend, slot) → its state


def parse_stat(text: str) -> StatTable:
    """The CSV of `show stat` → each server's SlotStat (columns found by the header's names)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"unexpected 'show stat' answer: {text[:200]!r}")
    names = lines[0][2:].split(",")
    try:
        px, sv, status = (names.index(n) for n in ("pxname", "svname", "status"))
    except ValueError:
        raise ValueError(f"'show stat' without its columns: {lines[0][:200]!r}") from None
    optional = [names.index(n) if n in names else None
                for n in ("addr", "weight", "check_status", "lastchg", "scur")]
    out: StatTable = {}
    # most lines have no quoted field: a plain split is several times faster than csv
    rows = (line.split(",") if '"' not in line else next(csv.reader([line]))
            for line in lines[1:] if line)
    for row in rows:
        if len(row) < len(names) - 1 or row[sv] in ("FRONTEND", "BACKEND"):
            continue
        addr, weight, check, since, sessions = (row[i] if i is not None else "" for i in optional)
        out[(row[px], row[sv])] = SlotStat(row[status], addr, _int(weight), check, _int(since),
                                           _int(sessions) or 0)
    return out


def state_of(status: str) -> str:
    """HAProxy's status in one word: UP, DOWN, DRAIN, MAINT (or HAProxy's own, uppercased).
    `UP 1/2` is still up (failing checks, not yet down), `DOWN 1/2` still down."""
    word = status.strip().upper()
    if word.startswith(("MAINT", "DRAIN", "DOWN")):
        return word.split(" ", 1)[0].split("(", 1)[0]
    if word.startswith("UP") or word == "NO CHECK":
        return "UP"
    return word or "UNKNOWN"


@dataclass(frozen=True)
class Snapshot:
    """Everything the status page is built from, read at one moment."""

    now: float  # wall clock
    health: HealthState
    applied: Routing | None
    slots: Mapping[str, Sequence[str | None]]
    stats: StatTable | None  # None: HAProxy did not answer (`stats_error` says why)
    stats_error: str | None = None
    haproxy_down: str | None = None
    listen_id: str = "listen"
    tcp_bind: str = "127.0.0.1"
    refused: Sequence[str] = ()
    conflicts: Sequence[str] = ()
    holds: Sequence[Mapping[str, object]] = ()
    certificates: Sequence[CertificateRow] = ()
    records: tuple[int, int] = (0, 0)  # valid, malformed


def build(s: Snapshot) -> dict[str, Any]:
    """The status as plain JSON-ready data."""
    _, health = report(s.health, s.now)
    applied = s.applied or Routing()
    return {
        "agent": "listen",
        "listen_id": s.listen_id,
        "time": iso(s.now),
        "status": health["status"],
        "problems": health["problems"],
        "etcd": {"connected": s.health.etcd_connected, "since": iso(s.health.etcd_changed),
                 "revision": s.health.revision},
        "last_reload": health.get("last_reload"),
        "last_error": health["last_error"],
        "errors": s.health.errors,
        "haproxy": {"serving": s.haproxy_down is None, "problem": s.haproxy_down,
                    "state_error": s.stats_error},
        "applied": s.applied is not None,
        "services": [_service(b, s) for b in applied.backends],
        "pins": [{"host": p.host, "address": _address(p.ip, p.port)} for p in applied.pins],
        "certificates": [_certificate(c, s.now) for c in
                         sorted(s.certificates, key=lambda c: (c.vhost, c.source))],
        "refused": list(s.refused),
        "conflicts": list(s.conflicts),
        "holds": [dict(h) for h in s.holds],
        "records": {"valid": s.records[0], "malformed": s.records[1]},
    }


def _service(b: Backend, s: Snapshot) -> dict[str, Any]:
    servers = {srv.name: srv for srv in b.servers}
    table = list(s.slots.get(b.name, ()))
    rows: list[dict[str, Any]] = []
    placed = set()
    for index, iid in enumerate(table):
        if iid is None:
            continue
        placed.add(iid)
        rows.append(_instance(b.name, iid, slot_name(index), servers.get(iid), s))
    rows += [_instance(b.name, iid, None, srv, s) for iid, srv in servers.items()
             if iid not in placed]  # not in a slot yet (an apply under way)
    rows.sort(key=lambda r: (r["withdrawn"], r["id"]))
    routed = b.vhost if b.mode == "http" else f"{s.tcp_bind}:{b.bind_port}"
    return {"path": b.path, "mode": b.mode, "routed": routed, "vhost": b.vhost,
            "port": b.bind_port, "backend": b.name, "check": b.check,
            "up": sum(1 for r in rows if r["state"] == "UP" and not r["withdrawn"]),
            "instances": rows}


def _instance(backend: str, iid: str, slot: str | None, server: Server | None,
              s: Snapshot) -> dict[str, Any]:
    stat = s.stats.get((backend, slot)) if s.stats is not None and slot else None
    if server is not None:
        address, weight = _address(server.ip, server.port), server.weight
    else:
        address, weight = (stat.addr if stat else ""), None
    if stat is not None:
        state, status = state_of(stat.status), stat.status
        weight = stat.weight if stat.weight is not None else weight
    else:
        state, status = "UNKNOWN", ""
    return {"id": iid, "address": address, "state": state, "status": status, "weight": weight,
            "slot": slot, "check": stat.check if stat else "",
            "since": stat.since if stat else None, "sessions": stat.sessions if stat else 0,
            "withdrawn": server is None}


def _certificate(c: CertificateRow, now: float) -> dict[str, Any]:
    days = None if c.not_after is None else math.floor((c.not_after - now) / DAY)
    return {"vhost": c.vhost, "source": c.source,
            "not_after": None if c.not_after is None else iso(c.not_after),
            "days_left": days, "error": c.error}


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
