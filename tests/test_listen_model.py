"""Pure tests: records → routing, the plan between two routings, rendering."""

from __future__ import annotations

import json
from pathlib import Path

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, ServiceRecord
from buoy.etcd.store import KeyValue
from buoy.listen.config import parse_http_bind, parse_vhost_suffix
from buoy.listen.groups import build_routing
from buoy.listen.model import parse_view
from buoy.listen.plan import plan
from buoy.listen.render import Renderer
from buoy.listen.slots import layout

KEYS = KeyLayout("/p")


def entry(path: str, iid: str, ext: int, *, port: int = 80, type_: str = "HTTP",
          **kw: object) -> tuple[AnnouncePath, ServiceRecord]:
    p = AnnouncePath.parse(path)
    rec = ServiceRecord(id=iid, app=p.app, env=p.env, service=p.service, name=p.name,
                        scope=p.scope, port=port, type=type_, ip="10.0.0.1",  # type: ignore[arg-type]
                        ext_port=ext, host="h", **kw)  # type: ignore[arg-type]
    return p, rec


def kv(key: str, value: str, rev: int = 5) -> KeyValue:
    return KeyValue(key, value.encode(), rev, rev, 0)


def test_http_groups_vhosts_and_pins() -> None:
    r = build_routing([entry("/internal/app1/dev/web", "b", 2), entry("/internal/app1/dev/web", "a", 1),
                       entry("/internal/app1/dev/web/ghost.example", "c", 3, check="/health")],
                      vhost_suffix=".buoy.test")
    by = r.by_name()
    web = by["http_internal_app1_dev_web"]
    assert web.vhost == "web.dev.app1.buoy.test"
    assert [s.name for s in web.servers] == ["a", "b"]
    ghost = by["http_internal_app1_dev_web_ghost.example"]
    assert ghost.vhost == "ghost.example" and ghost.check == "/health"
    assert {p.host for p in r.pins} == {"a.web.dev.app1.buoy.test", "b.web.dev.app1.buoy.test",
                                        "c.ghost.example"}


def test_port_clash_lexically_first_path_wins() -> None:
    r = build_routing([entry("/internal/app2/dev/db", "x", 6000, port=5432, type_="TCP"),
                       entry("/internal/app1/dev/db", "y", 6001, port=5432, type_="TCP"),
                       entry("/internal/app1/dev/cache", "z", 6002, port=6379, type_="TCP")],
                      reserved_ports=[80])
    assert [(b.path, b.bind_port) for b in r.tcp] == [("/internal/app1/dev/cache", 6379),
                                                      ("/internal/app1/dev/db", 5432)]
    assert len(r.errors) == 1 and "/internal/app2/dev/db" in r.errors[0]
    assert "5432" in r.errors[0]


def test_tcp_port_reserved_by_http_frontend() -> None:
    r = build_routing([entry("/internal/app1/dev/db", "x", 6000, port=80, type_="TCP")],
                      reserved_ports=[80])
    assert r.tcp == () and "HTTP frontend" in r.errors[0]


def test_malformed_records_are_problems_not_entries() -> None:
    good = entry("/internal/app1/dev/web", "a", 1)[1].to_json()
    bad_ip = json.loads(good) | {"IP": "10.0.0.1\n  server evil 1.2.3.4:80"}
    view = {"/p/services/internal/app1/dev/web/a": kv("/p/services/internal/app1/dev/web/a", good),
            "/p/services/internal/app1/dev/web/b": kv("/p/services/internal/app1/dev/web/b", "{nope"),
            "/p/services/internal/app1/dev/web/c": kv("/p/services/internal/app1/dev/web/c",
                                                      json.dumps(bad_ip)),
            "/p/services/internal/app1/dev/web/Bad": kv("/p/services/internal/app1/dev/web/Bad",
                                                        good)}
    entries, problems = parse_view(view, KEYS)
    assert [rec.id for _, rec in entries] == ["a"]
    assert {p.key.rsplit("/", 1)[1] for p in problems} == {"b", "c", "Bad"}


def test_plan_membership_vs_structure() -> None:
    base = [entry("/internal/app1/dev/web", "a", 1), entry("/internal/app1/dev/web", "b", 2)]
    r1 = build_routing(base)
    moved = build_routing([entry("/internal/app1/dev/web", "a", 9), base[1],
                           entry("/internal/app1/dev/web", "c", 3)])
    p = plan(r1, moved)
    assert not p.reload
    assert [(op.kind, op.server.name) for op in p.servers] == [("move", "a"), ("add", "c")]
    assert {op.kind for op in p.pins} == {"set", "add"}
    gone = plan(r1, build_routing(base[:1]))
    assert [(op.kind, op.server.name) for op in gone.servers] == [("remove", "b")]
    assert plan(r1, build_routing(base + [entry("/internal/app1/dev/api", "x", 4)])).reload
    assert plan(None, r1).reload
    assert plan(r1, build_routing(base)).empty


def test_render_has_hosts_servers_and_checks() -> None:
    r = build_routing([entry("/internal/app1/dev/web", "a", 1, check="/ping"),
                       entry("/internal/app1/dev/db", "d", 7, port=5432, type_="TCP")])
    renderer = Renderer(http_bind="*:80", tcp_bind="127.0.0.1", pin_map=Path("/s/pins.map"))
    out = renderer.render(r, layout(r, {}))
    text = out.config
    assert "use_backend %[var(txn.host),map(/s/hosts.map,buoy_no_route)]" in text
    assert out.hosts == "web.dev.app1 http_internal_app1_dev_web\n"  # TCP services have none
    assert "option httpchk GET /ping" in text
    assert "server s1 10.0.0.1:1 check inter 2s fall 2 rise 2 weight 1  # a" in text
    # spare slots wait disabled: 4 per backend at least, filled at run time
    assert text.count("0.0.0.0:0 check inter 2s fall 2 rise 2 disabled") == 6
    assert "retry-on conn-failure empty-response response-timeout" in text
    assert "bind 127.0.0.1:5432" in text and "option idle-close-on-response" in text
    assert out.pins == "a.web.dev.app1 10.0.0.1|1\n"  # TCP instances have no pins


def test_settings_parsing() -> None:
    assert parse_http_bind("*:80") == ("*:80", 80)
    assert parse_http_bind("127.0.0.1:8080") == ("127.0.0.1:8080", 8080)
    assert parse_vhost_suffix("Example.COM") == ".example.com"
    for bad in ("80", "host:80", "*:99999"):
        try:
            parse_http_bind(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_maxconn_is_sized_to_the_descriptor_limit() -> None:
    from buoy.listen.render import RenderError, size_maxconn

    r = build_routing([entry(f"/internal/app1/dev/s{n}", f"i{i}", 1000 + i)
                       for n in range(100) for i in range(10)])
    slots = layout(r, {})
    assert sum(len(t) for t in slots.values()) == 1300  # 10 instances: 13 slots each
    assert size_maxconn(r, slots, None) == (4000, True)  # not sized: the shipped default
    assert size_maxconn(r, slots, 1 << 20) == (4000, True)
    assert size_maxconn(r, slots, 5000) == ((5000 - 1300 - 256) // 2, True)
    # no room for a check per slot: servers go unchecked, connections keep their room
    assert size_maxconn(r, slots, 1600) == ((1600 - 256) // 2, False)
    try:
        size_maxconn(r, slots, 400)
    except RenderError as exc:
        assert "400" in str(exc)
    else:
        raise AssertionError("a limit leaving no room for connections must be refused")


def test_slots_keep_their_instances_and_grow_by_a_quarter() -> None:
    from buoy.listen.slots import fits, slot_count

    assert [slot_count(n) for n in (0, 1, 2, 3, 8, 10, 40)] == [4, 4, 4, 5, 10, 13, 50]
    web = "/internal/app1/dev/web"
    r = build_routing([entry(web, i, 1) for i in ("a", "b", "c")])
    table = layout(r, {})["http_internal_app1_dev_web"]
    assert table == ["a", "b", "c", None, None]
    # a reload keeps each instance in its slot; a newcomer takes a free one
    r2 = build_routing([entry(web, i, 1) for i in ("c", "d", "a")])
    table2 = layout(r2, {"http_internal_app1_dev_web": table})["http_internal_app1_dev_web"]
    assert table2[0] == "a" and table2[2] == "c" and "d" in table2 and "b" not in table2
    assert fits(table, ["d", "e"]) and not fits(table, ["d", "e", "f"])
    assert fits(["a", "b", "c", "d"], ["b"])  # still draining in its slot: takes it back
