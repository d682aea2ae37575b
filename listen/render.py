"""Render the HAProxy config and the pin map from a Routing (Jinja2; no side effects)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from buoy.listen.config import host_map_beside
from buoy.listen.model import Backend, Routing, Server
from buoy.listen.slots import SlotTable, slot_name

log = logging.getLogger(__name__)

# The same options go on rendered servers and on servers added at runtime, so a
# reload never changes how an instance is checked.
SERVER_OPTIONS = "check inter 2s fall 2 rise 2"
# When the descriptor limit cannot hold one health check per server slot (HAProxy
# reserves a descriptor for each and refuses to start past its limit), servers are
# rendered without checks: failed connections are still retried on another server.
UNCHECKED_OPTIONS = "inter 2s"

MAXCONN = 4000  # HAProxy's connection limit, when the descriptor limit allows it
MIN_MAXCONN = 100
FD_MARGIN = 256  # descriptors for listeners, pollers, logs and the master socket


class RenderError(Exception):
    """The template could not be loaded or rendered."""


@dataclass(frozen=True)
class Rendered:
    config: str
    pins: str  # the pin map: <ID>.<vhost> ip|port
    hosts: str = ""  # the host map: <vhost> <backend>

    def maps(self) -> tuple[str, str]:
        return self.pins, self.hosts


def default_template() -> str:
    return resources.files("buoy.listen").joinpath("templates/haproxy.cfg.j2").read_text()


class Renderer:
    """Holds the template; a `--template` file is re-read when it changes on disk."""

    def __init__(self, *, http_bind: str, tcp_bind: str, pin_map: Path,
                 host_map: Path | None = None, template: Path | None = None,
                 hard_stop_after: str = "120s", fd_limit: int | None = None,
                 https: Mapping[str, str] | None = None) -> None:
        self.template_path = template
        self.fd_limit = fd_limit  # RLIMIT_NOFILE HAProxy will have; None: not sized
        host_map = host_map or host_map_beside(pin_map)
        self.context = {"http_bind": http_bind, "tcp_bind": tcp_bind, "pin_map": str(pin_map),
                        "host_map": str(host_map),
                        "server_options": SERVER_OPTIONS, "hard_stop_after": hard_stop_after,
                        "https": https}  # None: no HTTPS frontend
        self._env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                                       keep_trailing_newline=True)
        self._cache: tuple[object, jinja2.Template] | None = None
        self.checked = True  # whether the last render gave servers health checks
        # backend name → (the backend, its slots, options, its server lines) last rendered:
        # a backend not built again since is not rendered again
        self._lines: dict[str, tuple[Backend, tuple[str | None, ...], str, str]] = {}

    def _template(self) -> jinja2.Template:
        stamp: object = "default"
        if self.template_path is not None:
            try:
                stamp = self.template_path.stat().st_mtime_ns
            except OSError as exc:
                raise RenderError(f"template {self.template_path}: {exc}") from None
        if self._cache is None or self._cache[0] != stamp:
            try:
                text = (self.template_path.read_text() if self.template_path is not None
                        else default_template())
                self._cache = (stamp, self._env.from_string(text))
            except (OSError, jinja2.TemplateError) as exc:
                raise RenderError(f"template {self.template_path or 'default'}: {exc}") from None
        return self._cache[1]

    def render(self, routing: Routing, slots: SlotTable) -> Rendered:
        """The config for `routing` with each backend's servers in the slots of `slots`."""
        maxconn, checked = size_maxconn(routing, slots, self.fd_limit)
        if checked != self.checked:
            self.checked = checked
            if checked:
                log.warning("servers have health checks again: the descriptor limit %s holds "
                            "one per server slot", self.fd_limit)
            else:
                log.warning("servers rendered without health checks: %d server slots need "
                            "about %d file descriptors and the limit is %s (raise ulimit -n, "
                            "docker run --ulimit nofile=N)", slot_total(slots),
                            fds_needed(slot_total(slots)), self.fd_limit)
        options = SERVER_OPTIONS if checked else UNCHECKED_OPTIONS
        context = {**self.context, "server_options": options}

        def server_lines(backend: Backend) -> str:
            return self._server_lines(backend, slots.get(backend.name, ()), options)

        try:
            config = self._template().render(routing=routing, slots=SlotRows(routing, slots),
                                             server_lines=server_lines, maxconn=maxconn,
                                             **context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {self.template_path or 'default'}: {exc}") from None
        if len(self._lines) > 2 * len(routing.backends) + 64:  # services that went
            self._lines = {b.name: self._lines[b.name] for b in routing.backends
                           if b.name in self._lines}
        return Rendered(config, render_pins(routing), render_hosts(routing))


    def _server_lines(self, backend: Backend, table: Sequence[str | None], options: str) -> str:
        key = tuple(table)
        cached = self._lines.get(backend.name)
        if cached is not None and cached[0] is backend and cached[1] == key and \
                cached[2] == options:
            return cached[3]
        text = render_servers(backend, key, options)
        self._lines[backend.name] = (backend, key, options, text)
        return text


def render_servers(backend: Backend, table: Sequence[str | None], options: str) -> str:
    """A backend's `server` lines, one per slot: an instance in it (its ID in the comment)
    or a free one, disabled. Each line starts with a newline."""
    by_id = {s.name: s for s in backend.servers}
    out = []
    for i, iid in enumerate(table):
        s = by_id.get(iid) if iid else None
        if s is not None:
            out.append(f"\n    server {slot_name(i)} {s.addr} {options} weight {s.weight}"
                       f"  # {s.name}")
        else:
            out.append(f"\n    server {slot_name(i)} 0.0.0.0:0 {options} disabled")
    return "".join(out)


def size_maxconn(routing: Routing, slots: SlotTable, fd_limit: int | None) -> tuple[int, bool]:
    """HAProxy's maxconn from what is routed, and whether servers get health checks: each
    connection takes two descriptors (client and server side), each server slot with a
    health check one, each TCP listener one. When checks would leave too little for
    connections, servers go without them; RenderError (naming the limit) when even that
    leaves too little."""
    if fd_limit is None:
        return MAXCONN, True
    servers = slot_total(slots)
    spare = fd_limit - len(routing.tcp) - FD_MARGIN
    if (spare - servers) // 2 >= MIN_MAXCONN:
        return min(MAXCONN, (spare - servers) // 2), True
    if spare // 2 < MIN_MAXCONN:
        raise RenderError(f"{len(routing.tcp)} TCP listeners need about "
                          f"{fds_needed(len(routing.tcp))} file descriptors and the limit is "
                          f"{fd_limit}: raise it (ulimit -n, docker run --ulimit nofile=N)")
    return min(MAXCONN, spare // 2), False


def slot_total(slots: SlotTable) -> int:
    return sum(len(t) for t in slots.values())


def fds_needed(checked: int) -> int:
    """Descriptors for `checked` health checks (or listeners) and the fewest connections."""
    return checked + FD_MARGIN + 2 * MIN_MAXCONN


def slot_rows(routing: Routing, slots: SlotTable) -> dict[str, list[tuple[str, Server | None]]]:
    """Per backend, each slot's server name and the instance in it (None: a free slot)."""
    return {b.name: _rows(b, slots.get(b.name, ())) for b in routing.backends}


def _rows(backend: Backend, table: Sequence[str | None]) -> list[tuple[str, Server | None]]:
    by_id = {s.name: s for s in backend.servers}
    return [(slot_name(i), by_id.get(iid) if iid else None) for i, iid in enumerate(table)]


class SlotRows(Mapping[str, list[tuple[str, Server | None]]]):
    """`slot_rows` for a template, each backend's rows made when a template asks for them
    (the shipped one uses `server_lines`, which reuses a backend's lines until it changes)."""

    def __init__(self, routing: Routing, slots: SlotTable) -> None:
        self.routing, self.slots = routing, slots

    def __getitem__(self, name: str) -> list[tuple[str, Server | None]]:
        backend = self.routing.backend(name)
        if backend is None:
            raise KeyError(name)
        return _rows(backend, self.slots.get(name, ()))

    def __iter__(self) -> Iterator[str]:
        return (b.name for b in self.routing.backends)

    def __len__(self) -> int:
        return len(self.routing.backends)


def render_hosts(routing: Routing) -> str:
    return "".join(f"{b.vhost} {b.name}\n" for b in routing.http if b.vhost)


def render_pins(routing: Routing) -> str:
    return "".join(f"{p.host} {p.value}\n" for p in routing.pins)
