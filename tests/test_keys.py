"""The key layout: build and parse, with and without the global prefix."""

from __future__ import annotations

import pytest

from buoy.etcd.keys import KeyError_, KeyLayout
from buoy.etcd.records import AnnouncePath, RecordError

PATH = AnnouncePath.parse("/internal/app1/dev/db/ghost.example")


@pytest.mark.parametrize("prefix", ["", "/site-a", "/x/y"])
def test_instance_keys_round_trip(prefix: str) -> None:
    keys = KeyLayout(prefix)
    akey = keys.announce_key(PATH, "0ce60d000eac")
    skey = keys.service_key(PATH, "0ce60d000eac")
    assert akey == f"{prefix}/announce/internal/app1/dev/db/ghost.example/0ce60d000eac"
    assert skey == f"{prefix}/services/internal/app1/dev/db/ghost.example/0ce60d000eac"
    assert keys.parse_announce_key(akey) == (PATH, "0ce60d000eac")
    assert keys.parse_service_key(skey) == (PATH, "0ce60d000eac")
    assert akey.startswith(keys.announce_root)


def test_wrong_kind_or_prefix_rejected() -> None:
    keys = KeyLayout("/a")
    with pytest.raises(KeyError_):
        keys.parse_announce_key("/services/internal/app1/dev/db/x")
    with pytest.raises(KeyError_):
        keys.parse_announce_key("/b/announce/internal/app1/dev/db/x")
    with pytest.raises(KeyError_):
        keys.parse_announce_key("/a/announce/internal/app1/dev/X")
    with pytest.raises(KeyError_):
        keys.parse_announce_key("/a/announce/internal/app1/x")


@pytest.mark.parametrize("bad", ["a", "/a/", "/a b", "/a\n"])
def test_bad_prefix(bad: str) -> None:
    with pytest.raises(RecordError, match="BUOY_PREFIX"):
        KeyLayout(bad)


def test_bad_instance_id_never_becomes_a_key() -> None:
    with pytest.raises(RecordError, match="ID"):
        KeyLayout().announce_key(PATH, "../x")


def test_listen_prefix() -> None:
    keys = KeyLayout("/p")
    assert keys.services_watch_prefix("/services/internal/app1/dev") == \
        "/p/services/internal/app1/dev/"
    assert keys.services_watch_prefix("/services/internal/") == "/p/services/internal/"
    for bad in ("/announce/x", "/services/", "/services/a/b/c/d/e/f", "/services/A"):
        with pytest.raises(RecordError, match="LISTEN_PATH"):
            keys.services_watch_prefix(bad)


def test_skydns_keys_reverse_labels() -> None:
    keys = KeyLayout("/p")
    key = keys.skydns_key("x1.db.dev.app1.internal.buoy.internal.")
    assert key == "/p/skydns/internal/buoy/internal/app1/dev/db/x1"
    assert keys.parse_skydns_key(key) == "x1.db.dev.app1.internal.buoy.internal."
