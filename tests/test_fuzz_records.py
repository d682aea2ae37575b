"""Fuzzed announce, service and SkyDNS records written straight into etcd, next to one good service.

Whatever lands in etcd, the rendered HAProxy config passes `haproxy -c` and routes the
good service, no rejected string reaches the config, a DNS answer or a key, and `buoy dns`
answers for the good record exactly as before.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest
from conftest import store_for
from etcd_server import EtcdServer, wait_for
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from listen_helpers import NamedHTTP, RunningListener, answers
from test_dns_support import RunningDns, running_dns

from buoy.etcd.dns_records import SkyDNSRecord
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, RecordError
from buoy.etcd.store import EtcdStore
from buoy.listen.groups import build_routing
from buoy.listen.model import parse_view
from buoy.listen.render import Renderer
from buoy.listen.slots import layout

GOOD = AnnouncePath.parse("/internal/app1/dev/web")
GOOD_NAME = "web.dev.app1.internal.buoy.internal."
MARK = "Zq9\u2603"  # the snowman fails every field rule, so a marked string is always rejected
NASTY = ["\n", "\r\n    server evil 6.6.6.6:80", " ", "#", "'", '"', "\x00", "\u202e", "é",
         "{{ routing }}", "%[src]", "${HOME}", "\\", "/", ".", "..", "\t", "*", ";"]
SERVICE_FIELDS = ["ID", "APP", "ENV", "SERVICE", "NAME", "PORT", "TYPE", "SCOPE", "CHECK",
                  "WEIGHT", "VERSION", "IP", "EXT_PORT", "HOST", "EXTRA"]
SKYDNS_FIELDS = ["host", "port", "priority", "weight", "ttl", "text", "targetstrip", "group"]

scalars = (st.none() | st.booleans() | st.integers(-2**40, 2**40)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)
marked = (st.builds(lambda a, n, b: a + n + MARK + b, st.text(max_size=10), st.sampled_from(NASTY),
                    st.text(max_size=10))
          | st.builds(lambda n, k: n + MARK * k, st.sampled_from(NASTY), st.integers(1, 400)))
values = json_values | marked


@st.composite
def fuzzed(draw: st.DrawFn) -> dict[str, Any]:
    """One fuzz case: changed service fields, changed SkyDNS fields, and how to write them."""
    return {
        "service": draw(st.dictionaries(st.sampled_from(SERVICE_FIELDS), values, min_size=1,
                                        max_size=4)),
        "skydns": draw(st.dictionaries(st.sampled_from(SKYDNS_FIELDS), values, min_size=1,
                                       max_size=3)),
        "raw": draw(st.none() | marked | st.sampled_from(["", "[]", "null", "{", "1"])),
        "key_suffix": draw(st.none() | marked | st.text(max_size=20)),
    }


def base_service(i: int) -> dict[str, Any]:
    return {"ID": f"f{i}", "APP": "fz", "ENV": "dev", "SERVICE": f"s{i}", "SCOPE": "internal",
            "PORT": 80, "TYPE": "HTTP", "IP": "127.0.0.1", "EXT_PORT": 9, "HOST": "h"}


def write_case(store: EtcdStore, keys: KeyLayout, i: int, case: dict[str, Any]) -> int:
    """Put the case under /services, /announce and /skydns; the revision of the last SkyDNS put."""
    path = AnnouncePath.parse(f"/internal/fz/dev/s{i}")
    service = {**base_service(i), **case["service"]}
    announce = {k: v for k, v in service.items() if k not in ("IP", "EXT_PORT", "HOST")}
    skydns = {"host": "127.0.0.1", "port": 9, **case["skydns"]}
    dns_root = f"{keys.skydns_root}internal/buoy/internal/fz/dev/s{i}"
    store.put(keys.service_key(path, f"f{i}"), json.dumps(service))
    store.put(keys.announce_key(path, f"f{i}"), json.dumps(announce))
    if case["raw"] is not None:  # not JSON, or not an object
        store.put(keys.service_key(path, f"r{i}"), case["raw"])
        store.put(f"{dns_root}/r{i}", case["raw"])
    if case["key_suffix"] is not None:  # a key outside the layout, with a good value
        store.put(f"{keys.services_root}internal/fz/dev/{case['key_suffix']}",
                  json.dumps(base_service(i)))
        store.put(f"{keys.skydns_root}internal/fz/{case['key_suffix']}",
                  json.dumps({"host": "127.0.0.1"}))
    return store.put(f"{dns_root}/f{i}", json.dumps(skydns))


def render_and_check(store: EtcdStore, keys: KeyLayout, work: Path, good_port: int) -> str:
    """listen's own pipeline on what the store holds; the config must pass `haproxy -c`."""
    _, kvs = store.get_prefix(keys.services_root)
    entries, _ = parse_view({kv.key: kv for kv in kvs}, keys)
    pins = work / "pins.map"
    routing = build_routing(entries)
    rendered = Renderer(http_bind="127.0.0.1:1", tcp_bind="127.0.0.1", pin_map=pins).render(
        routing, layout(routing, {}))
    pins.write_text(rendered.pins)
    (work / "hosts.map").write_text(rendered.hosts)
    cfg = work / "haproxy.cfg"
    cfg.write_text(rendered.config)
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    config = rendered.config + rendered.pins + rendered.hosts
    assert MARK not in config and "6.6.6.6" not in config and "evil" not in config
    assert "web.dev.app1 http_internal_app1_dev_web\n" in rendered.hosts
    assert f"127.0.0.1:{good_port} check inter 2s fall 2 rise 2 weight 1  # good\n" in config
    return config


def check_dns(srv: RunningDns, i: int, good_port: int) -> None:
    assert srv.answers(GOOD_NAME, "A") == {"127.0.0.1"}
    assert srv.answers(GOOD_NAME, "SRV") == {f"10 100 {good_port} good.{GOOD_NAME}"}
    for name in (f"s{i}.dev.fz.internal.buoy.internal.", "internal.buoy.internal."):
        for rdtype in ("A", "AAAA", "SRV", "TXT", "CNAME"):
            reply = srv.ask(name, rdtype)
            assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
            text = dns.message.from_wire(reply.to_wire()).to_text()
            if rdtype != "TXT":  # TXT carries a record's `text`: any printable text is allowed
                assert MARK not in text and "6.6.6.6" not in text


def test_fuzzed_records_never_break_routing_or_dns(etcd: EtcdServer, store: EtcdStore,
                                                   keys: KeyLayout, prefix: str,
                                                   tmp_path: Path) -> None:
    web = NamedHTTP("good")
    counter = itertools.count()
    key, value = f"{keys.skydns_root}internal/buoy/internal/app1/dev/web/good", \
        SkyDNSRecord(host="127.0.0.1", port=web.port).to_json()
    store.put(key, value)
    from listen_helpers import put_service
    put_service(store, keys, str(GOOD), "good", web.port)
    try:
        with running_dns(store_for(etcd), keys) as srv:
            @settings(max_examples=50, deadline=None, database=None,
                      phases=[Phase.generate],
                      suppress_health_check=[HealthCheck.too_slow])
            @given(case=fuzzed())
            def one(case: dict[str, Any]) -> None:
                i = next(counter)
                rev = write_case(store, keys, i, case)
                render_and_check(store, keys, tmp_path, web.port)
                srv.wait_revision(rev)
                check_dns(srv, i, web.port)

            one()
        # Everything fuzzed is still in etcd: the real processes and a running listen.
        listen_paths = "/services/internal/app1/dev,/services/internal/fz/dev"
        state = tmp_path / "state"
        state.mkdir()
        (state / "pins.map").write_text("")
        (state / "hosts.map").write_text("")
        out = subprocess.run(
            [sys.executable, "-m", "buoy", "listen", "--once", "--dry-run", "--listen-path",
             listen_paths, "--etcd-endpoints", etcd.endpoint, "--prefix", prefix,
             "--state-dir", str(state), "--http-bind", "127.0.0.1:1"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        assert MARK not in out.stdout
        assert f"127.0.0.1:{web.port} check inter 2s fall 2 rise 2 weight 1  # good\n" in out.stdout
        (state / "haproxy.cfg").write_text(out.stdout)
        check = subprocess.run(["haproxy", "-c", "-f", str(state / "haproxy.cfg")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
        r = RunningListener(store_for(etcd), keys, tmp_path / "live", listen_paths.split(","),
                            advertise_ip="127.0.0.9", listen_id="lb1")
        try:
            r.start()
            wait_for(lambda: answers(r.http_port, "web.dev.app1") == {"good"}, what="good routed")
            kv = wait_for(lambda: store.get(keys.skydns_key("lb1.web.dev.app1")), what="vhost")
            assert SkyDNSRecord.from_json(kv.value).host == "127.0.0.9"
            _, written = store.get_prefix(keys.skydns_root)
            assert not [k.key for k in written if k.lease and MARK in k.key]  # no key made of it
        finally:
            r.stop()
    finally:
        web.close()


@pytest.mark.parametrize("value", ['{"host": [[]]}', '{"host": 5}', '{"host": {"a": 1}}',
                                   '{"host": true}', '{"host": null}'])
def test_skydns_host_of_the_wrong_type_is_a_record_error(value: str) -> None:
    """Found by the fuzz test: a list host crashed the dns watcher thread (AttributeError)."""
    with pytest.raises(RecordError):
        SkyDNSRecord.from_json(value)
