"""Apply a Routing to HAProxy: runtime API for membership, validated reload for structure.

Membership fills and empties the server slots every backend was rendered with
(listen/slots.py). The live config file is brought up to date with the runtime
changes when listen is idle (`flush`), and always before a reload or a restart, so a
later reload, a restarted HAProxy or a fresh start with etcd down keeps them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from buoy.listen.config import host_map_beside
from buoy.listen.haproxy import HAProxy, HAProxyError
from buoy.listen.model import Routing
from buoy.listen.plan import PinOp, Plan, ServerOp, plan
from buoy.listen.render import Rendered, Renderer, RenderError
from buoy.listen.slots import SlotTable, fits, layout, slot_name

log = logging.getLogger(__name__)


@dataclass
class Stats:
    """Counters, exported as metrics."""

    renders: int = 0
    reloads: int = 0
    reload_failures: int = 0
    runtime_ops: int = 0
    runtime_failures: int = 0
    removed: int = 0


@dataclass
class Draining:
    backend: str
    server: str  # the instance ID
    slot: int
    deadline: float


@dataclass
class Applier:
    haproxy: HAProxy
    renderer: Renderer
    config_path: Path
    pin_path: Path
    drain_timeout: float = 30.0
    applied: Routing | None = None
    stats: Stats = field(default_factory=Stats)
    draining: dict[tuple[str, str], Draining] = field(default_factory=dict)
    on_reload: Callable[[bool, str], None] | None = None  # (ok, message), for /healthz
    slots: SlotTable = field(default_factory=dict)  # what each server slot holds now
    dirty: bool = False  # runtime changes not yet in the config file

    def apply(self, wanted: Routing) -> bool:
        """Bring HAProxy to `wanted`; False when it keeps the previous config."""
        steps = plan(self.applied, wanted)
        if steps.empty:
            return True
        if steps.reload or not self._fits(steps):
            return self._reload(wanted)
        try:
            self._runtime(steps)
        except (HAProxyError, OSError) as exc:
            self.stats.runtime_failures += 1
            log.warning("runtime change failed, reloading instead error=%s", exc)
            return self._reload(wanted)
        self.applied = wanted
        self.dirty = True  # same structure as the validated file: `flush` needs no `haproxy -c`
        return True

    def flush(self) -> None:
        """Write the runtime changes into the live config file and pin map."""
        if not self.dirty or self.applied is None:
            return
        self.dirty = False
        try:
            self.stats.renders += 1
            rendered = self.renderer.render(self.applied, self.slots)
            write_atomic(self.config_path, rendered.config)
            self._write_maps(rendered)
        except (RenderError, OSError) as exc:
            log.error("writing config after runtime change failed error=%s", exc)

    def _fits(self, steps: Plan) -> bool:
        adding: dict[str, list[str]] = {}
        for op in steps.servers:
            if op.kind == "add":
                adding.setdefault(op.backend, []).append(op.server.name)
        return all(fits(self.slots.get(b, ()), ids) for b, ids in adding.items())

    def _reload(self, wanted: Routing) -> bool:
        slots = layout(wanted, self.slots)
        try:
            self.stats.renders += 1
            rendered = self.renderer.render(wanted, slots)
        except RenderError as exc:
            self.stats.reload_failures += 1
            log.error("render failed; the running config keeps serving error=%s", exc)
            self._report(False, f"render failed: {exc}")
            return False
        if self.applied is None and self._is_live(rendered):
            self.applied, self.slots = wanted, slots  # HAProxy already runs exactly this
            return True
        previous = [read_or_none(path) for path in (self.config_path, *self.map_paths)]
        staged = self.config_path.with_name(self.config_path.name + ".staged")
        self._write_maps(rendered)  # `haproxy -c` of the staged config loads them
        write_atomic(staged, rendered.config)
        problem = self.haproxy.check(staged)
        if problem is None:
            os.replace(staged, self.config_path)
            try:
                self.haproxy.reload()
            except (HAProxyError, OSError) as exc:
                problem = str(exc)
                self._restore(previous)
        else:
            staged.unlink(missing_ok=True)
            self._restore(previous)
        if problem is not None:
            self.stats.reload_failures += 1
            log.error("config rejected; the running config keeps serving backends=%d "
                      "haproxy=%s", len(wanted.backends), problem.replace("\n", " | "))
            self._report(False, f"config rejected: {problem}")
            return False
        self.stats.reloads += 1
        self.applied, self.slots, self.dirty = wanted, slots, False
        self.draining.clear()  # old workers finish their own connections
        log.info("reloaded backends=%d pins=%d", len(wanted.backends), len(wanted.pins))
        self._report(True, f"reloaded backends={len(wanted.backends)} pins={len(wanted.pins)}")
        return True

    def _report(self, ok: bool, message: str) -> None:
        if self.on_reload is not None:
            self.on_reload(ok, message)

    @property
    def map_paths(self) -> tuple[Path, Path]:
        """The pin map and the host map, in the order of `Rendered.maps()`."""
        return self.pin_path, host_map_beside(self.pin_path)

    def _write_maps(self, rendered: Rendered) -> None:
        for path, text in zip(self.map_paths, rendered.maps(), strict=True):
            write_atomic(path, text)

    def _is_live(self, rendered: Rendered) -> bool:
        return all(read_or_none(path) == text for path, text in
                   zip((self.config_path, *self.map_paths), (rendered.config, *rendered.maps()),
                       strict=True))

    def _restore(self, previous: list[str | None]) -> None:
        for path, text in zip((self.config_path, *self.map_paths), previous, strict=True):
            if text is not None:
                write_atomic(path, text)

    def _runtime(self, steps: Plan) -> None:
        for host_op in steps.hosts:  # first: no new request reaches a service that went
            self.haproxy.sock.runtime(f"del map {host_map_beside(self.pin_path)} {host_op.vhost}")
        for op in steps.servers:
            self._server_op(op)
        for pin_op in steps.pins:
            self._pin_op(pin_op)

    def _server_op(self, op: ServerOp) -> None:
        cmd, s, table = self.haproxy.sock.runtime, op.server, self.slots[op.backend]
        addr_port = f"{s.ip} port {s.port}"
        self.stats.runtime_ops += 1
        came_back = None
        if op.kind == "add":
            came_back = self.draining.pop((op.backend, s.name), None)  # reuse its slot
            index = came_back.slot if came_back else table.index(None)
            table[index] = s.name
        else:
            index = table.index(s.name)
        ref = f"{op.backend}/{slot_name(index)}"
        if op.kind in ("add", "move"):
            # In maintenance before its address changes (a free slot is in it already):
            # HAProxy then keeps no idle connection to the old address, which a changed
            # address alone may leave in the pool.
            if op.kind == "move" or came_back is not None:
                cmd(f"set server {ref} state maint")
            self._set_addr(ref, addr_port)
            cmd(f"set server {ref} weight {s.weight}")
            cmd(f"set server {ref} state ready")
        elif op.kind == "weight":
            cmd(f"set server {ref} weight {s.weight}")
        else:
            cmd(f"set server {ref} state drain")
            self.draining[(op.backend, s.name)] = Draining(
                op.backend, s.name, index, time.monotonic() + self.drain_timeout)
        log.info("runtime op=%s server=%s id=%s addr=%s", op.kind, ref, s.name, s.addr)

    def _set_addr(self, ref: str, addr_port: str) -> None:
        """`set server addr`, which always answers on success: an empty answer means the
        command never reached the worker."""
        out = self.haproxy.sock.runtime(f"set server {ref} addr {addr_port}")
        if "changed" not in out and "no need to change" not in out:
            raise HAProxyError(f"set server {ref} addr: unexpected answer {out!r}")

    def _pin_op(self, op: PinOp) -> None:
        cmd, path = self.haproxy.sock.runtime, self.pin_path
        if op.kind == "remove":
            cmd(f"del map {path} {op.pin.host}")
        elif op.kind == "add":
            cmd(f"add map {path} {op.pin.host} {op.pin.value}")
        else:
            cmd(f"set map {path} {op.pin.host} {op.pin.value}")

    def tick(self) -> None:
        """Empty the slots of drained servers whose connections ended or whose time ran out."""
        now = time.monotonic()
        for key, d in list(self.draining.items()):
            ref = f"{d.backend}/{slot_name(d.slot)}"
            try:
                busy = self.connections(d.backend, slot_name(d.slot))
                if busy and now < d.deadline:
                    continue
                cmd = self.haproxy.sock.runtime
                cmd(f"set server {ref} state maint")
                if busy:
                    cmd(f"shutdown sessions server {ref}")
            except (HAProxyError, OSError) as exc:
                if now < d.deadline + 10:
                    continue  # HAProxy restarting or reloading: try again later
                log.warning("could not empty drained server=%s id=%s error=%s", ref, d.server, exc)
            else:
                self.stats.removed += 1
                log.info("drained server=%s id=%s timed_out=%s", ref, d.server, busy > 0)
            table = self.slots.get(d.backend)
            if table is not None and d.slot < len(table) and table[d.slot] == d.server:
                table[d.slot] = None
            del self.draining[key]

    def connections(self, backend: str, server: str) -> int:
        """Active connections of one server (`show servers conn`: used_cur)."""
        out = self.haproxy.sock.command(f"@1 show servers conn {backend}")
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == f"{backend}/{server}" and len(parts) > 6:
                return int(parts[6])
        return 0


def read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
