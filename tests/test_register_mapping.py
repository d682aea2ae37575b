"""Pure tests: register's mapping, reconcile plan, event verdicts and settings."""

from __future__ import annotations

import pytest

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, RecordError, ServiceRecord
from buoy.etcd.store import KeyValue
from buoy.register.config import RegisterConfig, default_route_interface
from buoy.register.docker_api import event_since, event_verdict
from buoy.register.mapping import (
    ContainerInfo,
    Placement,
    Refusal,
    container_from_inspect,
    find_container,
    label_announce,
    map_service,
)
from buoy.register.reconcile import actual_state, desired_state, keeper_changes, parse_announce, plan

PATH = AnnouncePath.parse("/internal/app1/dev/web")
CID = "0ce60d000eac" + "f" * 52
PLACE = Placement("host-a", "10.0.0.5")


def container(**over: object) -> ContainerInfo:
    base: dict[str, object] = dict(
        id=CID, name="web1", hostname="0ce60d000eac",
        env={"ANNOUNCE_PATH": "/internal/app1/dev/web", "PORT": "80"},
        ports={"80/tcp": (("0.0.0.0", "32768"), ("::", "32768"))},
        networks={"bridge": "172.17.0.2", "appnet": "10.1.0.7"})
    base.update(over)
    return ContainerInfo(**base)  # type: ignore[arg-type]


def announce(**over: object) -> AnnounceRecord:
    return AnnounceRecord.for_path(PATH, str(over.pop("id", "0ce60d000eac")),
                                   int(over.pop("port", 80)), "HTTP")  # type: ignore[call-overload]


def test_inspect_to_container_info() -> None:
    attrs = {"Id": CID, "Name": "/web1",
             "Config": {"Hostname": "0ce60d000eac", "Env": ["PORT=80", "A=b=c", "BARE"],
                        "Labels": {"buoy.path": "/internal/app1/dev/db"}},
             "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "1234"}],
                                           "81/tcp": None},
                                 "Networks": {"bridge": {"IPAddress": "172.17.0.2"}}}}
    info = container_from_inspect(attrs)
    assert info.name == "web1" and info.env == {"PORT": "80", "A": "b=c"}
    assert info.ports == {"80/tcp": (("127.0.0.1", "1234"),), "81/tcp": ()}
    assert info.networks == {"bridge": "172.17.0.2"}


def test_find_container_by_hostname_or_long_id_prefix() -> None:
    other = container(id="ab" * 32, hostname="db")
    pool = [container(), other]
    assert find_container("0ce60d000eac", pool) == pool[0]
    assert find_container("db", pool) == other
    assert find_container("abababababab", pool) == other  # 12-character ID prefix
    assert find_container("ababab", pool) is None  # too short to be trusted
    assert find_container("nothere", pool) is None
    twins = [container(id="ab" * 32, hostname="x"), container(id="ab" * 31 + "cd", hostname="y")]
    assert find_container("abababababab", twins) is None  # ambiguous prefix
    same_name = [container(id="ab" * 32, hostname="web"), container(id="cd" * 32, hostname="web")]
    assert find_container("web", same_name) is None  # two running containers, one name


def test_map_wildcard_binding_uses_host_ip() -> None:
    rec = map_service(PATH, announce(), container(), PLACE)
    assert isinstance(rec, ServiceRecord)
    assert (rec.ip, rec.ext_port, rec.host, rec.port) == ("10.0.0.5", 32768, "host-a", 80)


def test_map_specific_host_ip_binding_wins() -> None:
    c = container(ports={"80/tcp": (("127.0.0.1", "40001"),)})
    rec = map_service(PATH, announce(), c, PLACE)
    assert isinstance(rec, ServiceRecord) and (rec.ip, rec.ext_port) == ("127.0.0.1", 40001)


def test_unpublished_port_is_refused() -> None:
    result = map_service(PATH, announce(), container(ports={"81/tcp": (("", "9"),)}), PLACE)
    assert isinstance(result, Refusal) and "not published" in result.reason


def test_internal_network_uses_container_ip_and_port() -> None:
    place = Placement("host-a", "10.0.0.5", "appnet")
    rec = map_service(PATH, announce(), container(ports={}), place)
    assert isinstance(rec, ServiceRecord) and (rec.ip, rec.ext_port) == ("10.1.0.7", 80)
    missing = map_service(PATH, announce(), container(networks={}), place)
    assert isinstance(missing, Refusal) and "appnet" in missing.reason


@pytest.mark.parametrize("claim_path,claim_port", [
    ("/internal/app1/dev/db", 80), ("/internal/app1/prod/web", 80), ("/internal/app1/dev/web", 81)])
def test_spoofing_refused(claim_path: str, claim_port: int) -> None:
    path = AnnouncePath.parse(claim_path)
    rec = AnnounceRecord.for_path(path, "0ce60d000eac", claim_port, "HTTP")
    c = container(ports={f"{claim_port}/tcp": (("", "5000"),)})
    result = map_service(path, rec, c, PLACE)
    assert isinstance(result, Refusal) and "spoofing" in result.reason and "web1" in result.reason


def test_no_declared_identity_refused_but_labels_count() -> None:
    bare = container(env={})
    assert isinstance(map_service(PATH, announce(), bare, PLACE), Refusal)
    labelled = container(env={}, labels={"buoy.path": str(PATH), "buoy.port": "80"})
    assert isinstance(map_service(PATH, announce(), labelled, PLACE), ServiceRecord)


def test_label_announce() -> None:
    c = container(env={}, labels={"buoy.path": "/internal/app1/dev/db", "buoy.port": "5432",
                                  "buoy.type": "tcp", "buoy.check": "tcp"})
    result = label_announce(c)
    assert not isinstance(result, Refusal) and result is not None
    path, rec = result
    assert str(path) == "/internal/app1/dev/db"
    assert (rec.id, rec.port, rec.type, rec.check) == ("0ce60d000eac", 5432, "TCP", "tcp")
    bad = label_announce(container(env={}, labels={"buoy.path": "/x;rm", "buoy.port": "1",
                                                   "buoy.type": "TCP"}))
    assert isinstance(bad, Refusal) and "buoy.path" in bad.reason
    assert label_announce(container()) is None  # no labels
    # an agent inside (ANNOUNCE_PATH set) announces itself
    assert label_announce(container(labels={"buoy.path": "/internal/app1/dev/web"})) is None


def test_parse_announce_key_must_agree() -> None:
    keys = KeyLayout("/p")
    key = keys.announce_key(PATH, "0ce60d000eac")
    ok = parse_announce(keys, key, announce().to_json().encode())
    assert not isinstance(ok, str) and ok.path == PATH
    assert "differs" in str(parse_announce(keys, key, announce(id="other").to_json().encode()))
    other = AnnounceRecord.for_path(AnnouncePath.parse("/internal/app1/dev/db"), "0ce60d000eac",
                                    80, "HTTP")
    assert "differs" in str(parse_announce(keys, key, other.to_json().encode()))
    assert "JSON" in str(parse_announce(keys, key, b"{nope"))
    assert "key" in str(parse_announce(keys, "/p/announce/BAD/x", b"{}"))


def test_desired_and_plan() -> None:
    keys = KeyLayout("/p")
    ann = parse_announce(keys, keys.announce_key(PATH, "0ce60d000eac"), announce().to_json())
    assert not isinstance(ann, str)
    desired = desired_state(keys, [ann], [container()], PLACE, "buoy.internal.", 15)
    skey = keys.service_key(PATH, "0ce60d000eac")
    dkey = "/p/skydns/internal/buoy/internal/app1/dev/web/0ce60d000eac"
    assert set(desired.entries) == {skey, dkey} and desired.mapped == 1
    assert '"host":"10.0.0.5"' in desired.entries[dkey]
    # stale: a record of this host whose container is gone; another host's record is kept
    stale_path = AnnouncePath.parse("/internal/app1/dev/old")
    stale = ServiceRecord.from_announce(AnnounceRecord.for_path(stale_path, "dead", 1, "TCP"),
                                        ip="10.0.0.5", ext_port=1, host="host-a")
    foreign = ServiceRecord.from_announce(AnnounceRecord.for_path(stale_path, "b1", 1, "TCP"),
                                          ip="10.0.0.6", ext_port=1, host="host-b")
    kvs = [KeyValue(skey, desired.entries[skey].encode(), 5, 5, 7),
           KeyValue(keys.service_key(stale_path, "dead"), stale.to_json().encode(), 5, 5, 7),
           KeyValue(keys.service_key(stale_path, "b1"), foreign.to_json().encode(), 5, 5, 9),
           KeyValue("/p/services/garbage", b"{", 5, 5, 0)]
    actual = actual_state(keys, kvs, [], "host-a", "buoy.internal.", also=desired.entries)
    todo = plan(desired.entries, actual, lease=7)
    assert set(todo.put) == {dkey} and todo.delete == [keys.service_key(stale_path, "dead")]
    assert set(plan(desired.entries, actual, lease=8).put) == {skey, dkey}  # a new lease
    assert plan(desired.entries, actual, lease=None).put == {}


def test_keeper_changes() -> None:
    todo = keeper_changes({"a": "1", "b": "2"}, {"b": "3", "c": "4"})
    assert todo.put == {"b": "3", "c": "4"} and todo.delete == ["a"]


def test_event_verdicts() -> None:
    def ev(action: str, **attrs: str) -> dict[str, object]:
        return {"Type": "container", "Action": action, "Actor": {"ID": CID, "Attributes": attrs}}
    assert event_verdict(ev("die")) == "gone"
    assert event_verdict(ev("kill", signal="9")) == "gone"
    assert event_verdict(ev("kill", signal="1")) is None  # SIGHUP: a reload, not an exit
    assert event_verdict(ev("start")) == "fresh"
    assert event_verdict(ev("health_status: healthy")) is None
    assert event_verdict({"Type": "network", "Action": "connect"}) is None
    assert event_since({"timeNano": 1700000000123456789}) == "1700000000.123456789"


def test_default_route_interface() -> None:
    table = ("Iface\tDestination\tGateway\tFlags\n"
             "docker0\tAC110000\t00000000\t0001\n"
             "eth0\t00000000\t010200C0\t0003\n")
    assert default_route_interface(table) == "eth0"
    assert default_route_interface(table.splitlines()[0]) is None


@pytest.mark.parametrize("kwargs,field", [
    (dict(host_id="bad id"), "BUOY_HOST_ID"), (dict(host_ip="300.1.1.1"), "BUOY_HOST_IP"),
    (dict(internal=True), "BUOY_NETWORK"), (dict(network="x"), "BUOY_NETWORK"),
    (dict(zone="bad_zone"), "BUOY_DNS_ZONE"), (dict(docker_host="ftp://x"), "DOCKER_HOST")])
def test_config_rejects(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = dict(host_id="host-a", host_ip="10.0.0.5")
    base.update(kwargs)
    with pytest.raises(RecordError) as info:
        RegisterConfig(**base)  # type: ignore[arg-type]
    assert info.value.field == field


def test_host_network_container_is_the_host_ip_and_its_port() -> None:
    attrs = {"Id": CID, "Name": "/hostweb", "HostConfig": {"NetworkMode": "host"},
             "Config": {"Hostname": "vm", "Env": ["ANNOUNCE_PATH=/internal/app1/dev/web",
                                                  "PORT=8000"]},
             "NetworkSettings": {"Ports": {}, "Networks": {"host": {"IPAddress": ""}}}}
    info = container_from_inspect(attrs)
    assert info.host_network
    rec = map_service(PATH, announce(id="vm", port=8000), info, PLACE)
    assert isinstance(rec, ServiceRecord) and (rec.ip, rec.ext_port) == ("10.0.0.5", 8000)
    internal = map_service(PATH, announce(id="vm", port=8000), info,
                           Placement("host-a", "10.0.0.5", "appnet"))
    assert isinstance(internal, ServiceRecord) and internal.ip == "10.0.0.5"


def test_refusals_carry_the_short_verdict_ls_shows() -> None:
    hidden = map_service(PATH, announce(), container(ports={}), PLACE)
    assert isinstance(hidden, Refusal) and hidden.summary == "port 80 not published"
    db = AnnouncePath.parse("/internal/app1/dev/db")
    path = map_service(db, AnnounceRecord.for_path(db, "0ce60d000eac", 80, "TCP"), container(),
                       PLACE)
    assert isinstance(path, Refusal) and path.summary == "claims a path that is not its own"
    port = map_service(PATH, announce(port=81), container(), PLACE)
    assert isinstance(port, Refusal) and port.summary == "claims a port that is not its own"


def test_duplicate_hostnames_refused_naming_both_and_label_twins_told_apart() -> None:
    a = container(id="a" * 64, name="app-web-1", hostname="web")
    b = container(id="b" * 64, name="app-web-2", hostname="web")
    desired = desired_state(KeyLayout(""), [parse_announce(
        KeyLayout(""), KeyLayout("").announce_key(PATH, "web"), announce(id="web").to_json())],  # type: ignore[list-item]
        [a, b], PLACE, "buoy.internal.", 15)
    assert desired.entries == {}
    verdict = list(desired.verdicts.values())[0]
    assert verdict.refusal.summary == "duplicate hostname"
    assert "app-web-1 (aaaaaaaaaaaa)" in verdict.refusal.reason
    assert "app-web-2 (bbbbbbbbbbbb)" in verdict.refusal.reason
    labels = {"buoy.path": "/internal/app1/dev/db", "buoy.port": "80", "buoy.type": "TCP"}
    twin = container(id="c" * 64, hostname="db", env={}, labels=labels)
    result = label_announce(twin, shared=True)
    assert not isinstance(result, Refusal) and result is not None
    assert result[1].id == "cccccccccccc"
    alone = label_announce(twin)
    assert not isinstance(alone, Refusal) and alone is not None and alone[1].id == "db"
