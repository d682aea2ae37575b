"""Record rules: valid records round-trip through JSON; every invalid field is named."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buoy.etcd.records import AnnouncePath, AnnounceRecord, RecordError, ServiceRecord

label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)
ports = st.integers(1, 65535)


@st.composite
def announce_records(draw: st.DrawFn) -> AnnounceRecord:
    return AnnounceRecord(
        id=draw(label), app=draw(label), env=draw(label), service=draw(label),
        port=draw(ports), type=draw(st.sampled_from(["HTTP", "TCP"])),
        name=draw(st.none() | hostname), scope=draw(st.none() | label),
        check=draw(st.none() | st.sampled_from(["tcp", "/health", "/status?full=1"])),
        weight=draw(st.none() | st.integers(0, 256)))


@given(announce_records())
def test_announce_round_trips(record: AnnounceRecord) -> None:
    assert AnnounceRecord.from_json(record.to_json()) == record


@given(announce_records(), st.ip_addresses(v=4).map(str), ports, label)
def test_service_round_trips_and_keeps_announce(record: AnnounceRecord, ip: str, ext: int,
                                               host: str) -> None:
    service = ServiceRecord.from_announce(record, ip=ip, ext_port=ext, host=host)
    again = ServiceRecord.from_json(service.to_json())
    assert again == service
    assert again.announce() == record
    assert json.loads(service.to_json())["EXT_PORT"] == ext


def test_seed_record_parses() -> None:
    seed = ('{"ID": "0ce60d000eac", "APP": "app1", "ENV": "dev", "SERVICE": "web",'
            ' "NAME": "ghost.example", "PORT": 80, "TYPE": "HTTP"}')
    rec = AnnounceRecord.from_json(seed)
    assert (rec.id, rec.name, rec.port, rec.type) == ("0ce60d000eac", "ghost.example", 80, "HTTP")


def test_unknown_optional_fields_are_tolerated_and_kept() -> None:
    data = {"ID": "a1", "APP": "app1", "ENV": "dev", "SERVICE": "web", "PORT": 80,
            "TYPE": "HTTP", "FUTURE": {"x": 1}}
    rec = AnnounceRecord.from_dict(data)
    assert rec.extra == {"FUTURE": {"x": 1}}
    assert json.loads(rec.to_json())["FUTURE"] == {"x": 1}


@pytest.mark.parametrize(("field", "value"), [
    ("PORT", 0), ("PORT", 70000), ("PORT", "abc"), ("PORT", True), ("PORT", -1),
    ("TYPE", "UDP"), ("TYPE", "http"), ("ID", "UPPER"), ("ID", "a b"), ("ID", "a\nb"),
    ("APP", ""), ("APP", "-x"), ("ENV", "x" * 64), ("SERVICE", "a#b"), ("NAME", "a..b"),
    ("NAME", "a b.example"), ("CHECK", "/a b"), ("CHECK", "/x#y"), ("CHECK", 'x"'),
    ("WEIGHT", 999), ("SCOPE", "Internal"), ("APP", "ünï"),
])
def test_invalid_field_is_named(field: str, value: object) -> None:
    data: dict[str, object] = {"ID": "a1", "APP": "app1", "ENV": "dev", "SERVICE": "web",
                               "PORT": 80, "TYPE": "HTTP", field: value}
    with pytest.raises(RecordError) as info:
        AnnounceRecord.from_dict(data)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize("missing", ["ID", "APP", "ENV", "SERVICE", "PORT", "TYPE"])
def test_required_fields(missing: str) -> None:
    data = {"ID": "a1", "APP": "app1", "ENV": "dev", "SERVICE": "web", "PORT": 80, "TYPE": "HTTP"}
    del data[missing]
    with pytest.raises(RecordError, match=missing):
        AnnounceRecord.from_dict(data)


@pytest.mark.parametrize("text", ["not json", "[1,2]", "42", '{"ID": "a"'])
def test_not_an_object(text: str) -> None:
    with pytest.raises(RecordError, match="record"):
        AnnounceRecord.from_json(text)


@pytest.mark.parametrize(("field", "value"), [("IP", "10.0.0.300"), ("IP", "x"),
                                               ("EXT_PORT", 0), ("HOST", "a b"), ("HOST", "")])
def test_invalid_service_fields(field: str, value: object) -> None:
    data = {"ID": "a1", "APP": "app1", "ENV": "dev", "SERVICE": "web", "PORT": 80, "TYPE": "HTTP",
            "IP": "10.0.0.5", "EXT_PORT": 32768, "HOST": "h1", field: value}
    with pytest.raises(RecordError, match=field):
        ServiceRecord.from_dict(data)


@pytest.mark.parametrize("text", [
    "/internal/app1/dev/db", "/internal/app1/dev/db/ghost.example", "/a/b/c/d/e.f.g"])
def test_paths_parse_and_print(text: str) -> None:
    assert str(AnnouncePath.parse(text)) == text


@pytest.mark.parametrize("text", [
    "", "internal/app1/dev/db", "/internal/app1/dev", "/internal/app1/dev/db/x/y",
    "/Internal/app1/dev/db", "/internal/app 1/dev/db", "/internal/app1/dev/db\n",
    "/internal/../dev/db", "/internal/app1/dev/db/", "/internal//dev/db", "/a/b/c/d/e..f",
])
def test_bad_paths_rejected(text: str) -> None:
    with pytest.raises(RecordError, match="ANNOUNCE_PATH"):
        AnnouncePath.parse(text)


@given(st.text(max_size=60))
def test_arbitrary_path_text_never_slips_through(text: str) -> None:
    try:
        path = AnnouncePath.parse(text)
    except RecordError:
        return
    for seg in path.segments:
        assert all(c.isascii() and (c.isalnum() or c in "-.") for c in seg)
        assert seg == seg.lower()
