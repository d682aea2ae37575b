"""The CoreDNS etcd plugin's documented examples as test vectors, against a real etcd.

Source: coredns/coredns, plugin/etcd/README.md, sections "Reverse zones", "Zone name as
A record", "Zone name as AAAA record", "SRV record" and "TXT record". Each vector puts
the README's keys and values (under this test's prefix) and expects the README's
`dig +short` output. The README's sections are independent examples, so each vector
starts from an empty /skydns tree.
"""

from __future__ import annotations

import dns.rcode
import pytest
from etcd_server import wait_for
from test_dns_support import running_dns

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import EtcdStore

VECTORS = [
    ("zone name as A record",
     {"local/skydns/": '{"host":"1.1.1.1","ttl":60}'},
     "skydns.local.", "A", {"1.1.1.1"}),
    ("zone name as A record, round robin",
     {"local/skydns/": '{"host":"1.1.1.1","ttl":60}',
      "local/skydns/x1": '{"host":"1.1.1.1","ttl":"60"}',
      "local/skydns/x2": '{"host":"1.1.1.2","ttl":"60"}'},
     "skydns.local.", "A", {"1.1.1.1", "1.1.1.2"}),
    ("zone name as AAAA record",
     {"local/skydns/x3": '{"host":"2003::8:1","ttl":"60"}',
      "local/skydns/x4": '{"host":"2003::8:2","ttl":"60"}'},
     "skydns.local.", "AAAA", {"2003::8:1", "2003::8:2"}),
    ("SRV record",
     {"local/skydns/x5": '{"host":"skydns-local.server","ttl":60,"priority":10,"port":8080}'},
     "skydns.local.", "SRV", {"10 100 8080 skydns-local.server."}),
    ("TXT record",
     {"local/skydns/x6": '{"ttl":60,"text":"this is a random text message."}'},
     "skydns.local.", "TXT", {'"this is a random text message."'}),
    ("reverse zone",
     {"arpa/in-addr/10/0/0/127": '{"host":"reverse.skydns.local."}'},
     "127.0.0.10.in-addr.arpa.", "PTR", {"reverse.skydns.local."}),
]


@pytest.mark.parametrize("title,kvs,qname,qtype,expected", VECTORS,
                         ids=[v[0].replace(" ", "-") for v in VECTORS])
def test_coredns_readme_vector(store: EtcdStore, keys: KeyLayout, title: str,
                               kvs: dict[str, str], qname: str, qtype: str,
                               expected: set[str]) -> None:
    with running_dns(store, keys, zone="skydns.local.",
                     extra_zones=("0.0.10.in-addr.arpa.",)) as srv:
        rev = 0
        for key, value in kvs.items():
            rev = store.put(keys.skydns_root + key, value)
        srv.wait_revision(rev)
        for tcp in (False, True):
            response = srv.ask(qname, qtype, tcp=tcp)
            assert response.rcode() == dns.rcode.NOERROR, title
            assert srv.answers(qname, qtype, tcp=tcp) == expected, title
            assert {rrset.ttl for rrset in response.answer} <= {60, 300}


def test_coredns_srv_weights_across_priorities(store: EtcdStore, keys: KeyLayout) -> None:
    """backend_lookup.go SRV: weights normalised per priority, weight 0 counting as 100."""
    kvs = {
        "local/skydns/svc/a": '{"host":"10.0.0.1","port":80,"priority":10,"weight":10}',
        "local/skydns/svc/b": '{"host":"10.0.0.2","port":80,"priority":10,"weight":30}',
        "local/skydns/svc/c": '{"host":"10.0.0.3","port":81,"priority":20}',
        "local/skydns/svc/d": '{"host":"10.0.0.4","port":81,"priority":20}',
        "local/skydns/svc/e": '{"host":"10.0.0.5","port":82,"priority":30,"weight":1}',
        "local/skydns/svc/f": '{"host":"10.0.0.6","port":82,"priority":30,"weight":1000}',
    }
    with running_dns(store, keys, zone="skydns.local.") as srv:
        rev = 0
        for key, value in kvs.items():
            rev = store.put(keys.skydns_root + key, value)
        srv.wait_revision(rev)
        wait_for(lambda: len(srv.answers("svc.skydns.local.", "SRV")) == 6, timeout=5)
        assert srv.answers("svc.skydns.local.", "SRV") == {
            "10 25 80 a.svc.skydns.local.", "10 75 80 b.svc.skydns.local.",
            "20 50 81 c.svc.skydns.local.", "20 50 81 d.svc.skydns.local.",
            # floor(100/1001*1) = 0 becomes 1: a weight is at least 1
            "30 1 82 e.svc.skydns.local.", "30 99 82 f.svc.skydns.local.",
        }
