"""Map-based routing with runtime updates: real etcd, HAProxy and listen. The host map
(`<vhost> <backend>`, read with `show map` over the master socket) decides where a virtual
host goes; members change and HTTP services go without a reload; a service that comes
(or takes a vhost over) costs one reload. Plus the pure plan and the incremental routing
behind it, against the whole computation."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdServer, wait_for
from listen_helpers import NamedHTTP, RunningListener, get, put_service, start_listener
from test_listen_model import entry, kv

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath
from buoy.etcd.store import EtcdStore
from buoy.listen.config import host_map_beside
from buoy.listen.groups import GroupedView, build_routing, resolve
from buoy.listen.plan import HostOp, plan

LISTEN = "/services/internal/app1/dev"
NO_ROUTE = "buoy: no service for this host"


@pytest.fixture
def backends() -> Iterator[dict[str, NamedHTTP]]:
    made = {n: NamedHTTP(n) for n in ("web1", "web2", "api1", "shop1", "new1")}
    yield made
    for b in made.values():
        b.close()


def host_map(r: RunningListener) -> dict[str, str]:
    """The running HAProxy's host map, from `show map` over the master socket."""
    path = host_map_beside(r.config.pin_path)
    out = r.listener.haproxy.sock.command(f"@1 show map {path}")
    pairs = [line.split()[1:3] for line in out.splitlines() if line.startswith("0x")]
    return {k: v for k, v in pairs}


def answer(r: RunningListener, host: str) -> str:
    status, body = get(r.http_port, host)
    return body if status in (200, 503) else f"status {status}"


def test_virtual_hosts_follow_the_host_map(etcd: EtcdServer, store: EtcdStore, keys: KeyLayout,
                                           tmp_path: Path, backends: dict[str, NamedHTTP],
                                           running: list[RunningListener]) -> None:
    web, api = "/internal/app1/dev/web", "/internal/app1/dev/api"
    put_service(store, keys, web, "web1", backends["web1"].port)
    put_service(store, keys, api, "api1", backends["api1"].port)
    r = start_listener(etcd, keys, tmp_path / "state", running, [LISTEN])
    wait_for(lambda: answer(r, "api.dev.app1") == "api1", what="api routed")
    assert host_map(r) == {"web.dev.app1": "http_internal_app1_dev_web",
                           "api.dev.app1": "http_internal_app1_dev_api"}
    reloads = r.reloads()

    # a member comes and goes: servers and pins change, the host map and the config do not
    put_service(store, keys, web, "web2", backends["web2"].port)
    wait_for(lambda: answer(r, "web2.web.dev.app1") == "web2", what="new member pinned")
    wait_for(lambda: {answer(r, "web.dev.app1") for _ in range(6)} == {"web1", "web2"},
             what="both members balanced")
    store.delete(keys.service_key(AnnouncePath.parse(web), "web2"))
    wait_for(lambda: {answer(r, "web.dev.app1") for _ in range(6)} == {"web1"},
             what="member gone")
    assert r.reloads() == reloads and len(host_map(r)) == 2

    # an HTTP service goes: out of the host map at run time, no reload
    store.delete(keys.service_key(AnnouncePath.parse(api), "api1"))
    wait_for(lambda: answer(r, "api.dev.app1") == NO_ROUTE, what="api no longer routed")
    assert host_map(r) == {"web.dev.app1": "http_internal_app1_dev_web"}
    assert r.reloads() == reloads
    assert r.listener.applier.stats.runtime_failures == 0
    # the live files follow once listen is quiet, so a reload or a restart keeps it so
    hosts_file = host_map_beside(r.config.pin_path)
    wait_for(lambda: "api.dev.app1" not in hosts_file.read_text(), what="host map file written")
    assert "backend http_internal_app1_dev_api" not in r.config.config_path.read_text()

    # a service comes: one reload, and it is in the host map
    put_service(store, keys, "/internal/app1/dev/shop", "shop1", backends["shop1"].port)
    wait_for(lambda: answer(r, "shop.dev.app1") == "shop1", what="new service routed")
    assert r.reloads() == reloads + 1
    assert host_map(r)["shop.dev.app1"] == "http_internal_app1_dev_shop"
    # the one that went comes back: its backend is rendered again, one reload
    put_service(store, keys, api, "api1", backends["api1"].port)
    wait_for(lambda: answer(r, "api.dev.app1") == "api1", what="api routed again")
    assert r.reloads() == reloads + 2
    assert set(host_map(r)) == {"web.dev.app1", "api.dev.app1", "shop.dev.app1"}

    # a vhost moves: two services want shop.example, the first routed keeps it; once it goes
    # the other takes it over (its backend is new: one reload) and the map says so
    first, second = "/internal/app1/dev/web/shop.example", "/internal/app1/dev/api/shop.example"
    put_service(store, keys, first, "web1", backends["web1"].port)
    wait_for(lambda: answer(r, "shop.example") == "web1", what="shop.example on web")
    put_service(store, keys, second, "new1", backends["new1"].port)
    wait_for(lambda: any("shop.example" in e for e in r.listener.refused), what="clash seen")
    assert host_map(r)["shop.example"] == "http_internal_app1_dev_web_shop.example"
    before = r.reloads()
    store.delete(keys.service_key(AnnouncePath.parse(first), "web1"))
    wait_for(lambda: answer(r, "shop.example") == "new1", what="shop.example moved to api")
    assert r.reloads() == before + 1  # (and the master socket answers again)
    assert host_map(r)["shop.example"] == "http_internal_app1_dev_api_shop.example"
    assert answer(r, "web.dev.app1") == "web1" and answer(r, "shop.dev.app1") == "shop1"


def test_a_service_that_goes_is_unmapped_and_drained_without_a_reload() -> None:
    web = [entry("/internal/app1/dev/web", f"w{i}", 8000 + i) for i in range(3)]
    api = [entry("/internal/app1/dev/api", "a1", 9000)]
    db = [entry("/internal/app1/dev/db", "d1", 5432, port=5432, type_="TCP")]
    applied = build_routing(web + api + db)
    steps = plan(applied, build_routing(web + db))
    assert not steps.reload
    assert steps.hosts == (HostOp("remove", "api.dev.app1", "http_internal_app1_dev_api"),)
    assert [(op.kind, op.server.name) for op in steps.servers] == [("remove", "a1")]
    assert [(op.kind, op.pin.host) for op in steps.pins] == [("remove", "a1.api.dev.app1")]
    assert plan(applied, build_routing(web + api)).reload  # a TCP port is given up: reload
    # one goes and another comes: the new backend needs a reload
    assert plan(applied, build_routing(web + db + [entry("/internal/app1/dev/x", "x", 1)])).reload


def test_incremental_routing_is_the_whole_computation() -> None:
    """Random puts and deletes, clashes and pin hosts that are vhosts included: after each
    batch the reused routing equals `resolve` over every group, pins too."""
    rng = random.Random(3)
    keys = KeyLayout("/p")
    paths = [f"/internal/app1/dev/s{n}" for n in range(6)] + [
        "/internal/app1/dev/web/shop.example", "/internal/app1/dev/api/shop.example",
        "/internal/app1/dev/web/a.web.dev.app1"]  # its vhost is web's pin host for `a`
    view: dict[str, object] = {}
    grouped = GroupedView(keys)
    applied = None
    revision = 1
    for _ in range(300):
        changed = []
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(paths + ["/internal/app1/dev/web"])
            iid = rng.choice("abcd")
            key = keys.service_key(AnnouncePath.parse(path), iid)
            if key in view and rng.random() < 0.4:
                del view[key]
            else:
                revision += 1
                p, rec = entry(path, iid, 1000 + rng.randint(0, 3))
                view[key] = kv(key, rec.to_json(), revision)
            changed.append(key)
        grouped.apply(changed, view)  # type: ignore[arg-type]
        routing = grouped.routing(reserved_ports=[80], applied=applied)
        whole = resolve(grouped.groups.values(), reserved_ports=[80],
                        incumbents=None if applied is None else
                        {f"host {b.vhost}": b.path for b in applied.http if b.vhost})
        assert routing == whole and set(routing.pins) == set(whole.pins)
        assert routing.errors == whole.errors
        applied = routing


def test_kept_server_lines_render_what_the_macro_renders(tmp_path: Path) -> None:
    """The shipped template's `server_lines` (kept per backend until it changes) writes what
    the `servers(b)` macro writes from `slots`: after a change of members, of a slot alone
    (a drained slot freed) and of the descriptor limit (checks off)."""
    from buoy.listen.render import Renderer, default_template
    from buoy.listen.slots import layout

    macro = tmp_path / "macro.j2"
    macro.write_text(default_template().replace("server_lines(b)", "servers(b)"))
    kept = Renderer(http_bind="127.0.0.1:80", tcp_bind="127.0.0.1", pin_map=tmp_path / "p.map")
    plain = Renderer(http_bind="127.0.0.1:80", tcp_bind="127.0.0.1", pin_map=tmp_path / "p.map",
                     template=macro)
    web = [entry("/internal/app1/dev/web", f"w{i}", 8000 + i) for i in range(3)]
    db = [entry("/internal/app1/dev/db", "d1", 5432, port=5432, type_="TCP")]
    routing = build_routing(web + db)
    slots = layout(routing, {})
    assert kept.render(routing, slots) == plain.render(routing, slots)
    routing = build_routing(web[:2] + db + [entry("/internal/app1/dev/web", "w9", 8009)])
    slots = layout(routing, slots)
    assert kept.render(routing, slots) == plain.render(routing, slots)
    slots["http_internal_app1_dev_web"][-1] = None  # a slot freed, the backend the same
    assert kept.render(routing, slots) == plain.render(routing, slots)
    assert "server s" in kept.render(routing, slots).config
    kept.fd_limit = plain.fd_limit = 460  # no room for checks: every line changes
    out = kept.render(routing, slots)
    assert out == plain.render(routing, slots) and " check " not in out.config
