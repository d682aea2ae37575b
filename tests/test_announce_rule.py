"""One rule for an instance, in buoy.etcd.records.check_instance: announce refuses at start what
register would refuse (pure; the command's exit 2 is in test_announce_gateway.py)."""

from __future__ import annotations

import pytest

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import AnnouncePath, AnnounceRecord, RecordError, check_instance
from buoy.register.mapping import ContainerInfo, Placement
from buoy.register.reconcile import desired_state, parse_announce

ID = "0ce60d000eac"
ZONE = "buoy.internal."


def path_with_name(labels: int, size: int = 60) -> AnnouncePath:
    return AnnouncePath.parse("/internal/app1/dev/web/" + ".".join(["a" * size] * labels))


def test_returns_the_instance_dns_name() -> None:
    name = check_instance(AnnouncePath.parse("/internal/app1/dev/db/ghost.example"), ID, ZONE)
    assert name == f"{ID}.ghost.example.db.dev.app1.internal.buoy.internal."


@pytest.mark.parametrize("zone", ["buoy.internal.", "Buoy.Internal", "buoy.internal"])
def test_the_zone_is_normalised(zone: str) -> None:
    assert check_instance(AnnouncePath.parse("/internal/app1/dev/web"), ID, zone).endswith(
        ".web.dev.app1.internal.buoy.internal.")


def name_of_length(n: int) -> str:
    """A valid NAME of exactly n characters: labels of 62 and a last one."""
    parts = []
    while n > 63:
        parts.append("a" * 62)
        n -= 63
    return ".".join([*parts, "b" * n])


def test_exactly_253_characters_pass_and_254_do_not() -> None:
    fixed = len(f"{ID}..web.dev.app1.internal.buoy.internal")
    at_limit = AnnouncePath.parse("/internal/app1/dev/web/" + name_of_length(253 - fixed))
    assert len(check_instance(at_limit, ID, ZONE).rstrip(".")) == 253
    over = AnnouncePath.parse("/internal/app1/dev/web/" + name_of_length(254 - fixed))
    with pytest.raises(RecordError) as err:
        check_instance(over, ID, ZONE)
    assert "254 characters" in str(err.value)


def test_too_long_names_the_path_bad_ids_and_zones_name_theirs() -> None:
    with pytest.raises(RecordError) as err:
        check_instance(path_with_name(4), ID, ZONE)
    assert err.value.field == "ANNOUNCE_PATH" and "292 characters" in str(err.value)
    with pytest.raises(RecordError) as err:
        check_instance(path_with_name(1), "Bad_ID", ZONE)
    assert err.value.field == "ID"
    with pytest.raises(RecordError) as err:
        check_instance(path_with_name(1), ID, "bad zone")
    assert err.value.field == "BUOY_DNS_ZONE"


@pytest.mark.parametrize("labels", [1, 2, 3, 4])
def test_register_refuses_exactly_what_announce_refuses(labels: int) -> None:
    path = path_with_name(labels)
    try:
        check_instance(path, ID, ZONE)
        announce_refuses = False
    except RecordError:
        announce_refuses = True
    keys = KeyLayout("/p")
    record = AnnounceRecord.for_path(path, ID, 80, "HTTP")
    ann = parse_announce(keys, keys.announce_key(path, ID), record.to_json())
    assert not isinstance(ann, str)
    container = ContainerInfo(
        id=ID + "f" * 52, name="web1", hostname=ID, env={"ANNOUNCE_PATH": str(path), "PORT": "80"},
        ports={"80/tcp": (("0.0.0.0", "32768"),)}, networks={"bridge": "172.17.0.2"})
    desired = desired_state(keys, [ann], [container], Placement("host-a", "10.0.0.5"), ZONE, 15)
    assert bool(desired.refusals) == announce_refuses
    assert desired.mapped == (0 if announce_refuses else 1)
