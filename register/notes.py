"""register's memory between syncs: parsed announces, and what it already said."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from buoy.etcd.keys import KeyLayout
from buoy.etcd.store import KeyValue
from buoy.register.reconcile import Announce, parse_announce

log = logging.getLogger("buoy.register.agent")


class OnceLog:
    """Logs each (kind, key, reason) once as a WARNING; forgets keys whose problem went away."""

    def __init__(self) -> None:
        self._said: dict[str, str] = {}  # "kind:key" -> the reason last logged

    def __call__(self, kind: str, reasons: Mapping[str, str]) -> None:
        for key, reason in reasons.items():
            if self._said.get(f"{kind}:{key}") != reason:
                self._said[f"{kind}:{key}"] = reason
                log.warning("%s key=%s %s", kind, key, reason)
        for tag in [t for t in self._said if t.startswith(kind + ":")]:
            if tag[len(kind) + 1:] not in reasons:
                del self._said[tag]


class AnnounceCache:
    """The /announce view parsed, each key parsed again only when its revision changes."""

    def __init__(self, keys: KeyLayout, say: OnceLog) -> None:
        self.keys = keys
        self.say = say
        self._parsed: dict[str, tuple[int, Announce | str]] = {}

    def parse(self, view: Mapping[str, KeyValue]) -> list[Announce]:
        out = []
        malformed = {}
        cache: dict[str, tuple[int, Announce | str]] = {}
        for key, kv in view.items():
            hit = self._parsed.get(key)
            if hit is None or hit[0] != kv.mod_revision:
                hit = (kv.mod_revision, parse_announce(self.keys, key, kv.value))
            cache[key] = hit
            if isinstance(hit[1], Announce):
                out.append(hit[1])
            else:
                malformed[key] = hit[1]
        self._parsed = cache
        self.say("malformed", malformed)
        return out
