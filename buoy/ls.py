"""`buoy ls`: what is in /announce and /services, as a tree or as JSON.

Beside each announce it says whether it is routed, and if not, why: the verdict
register published under `/status/<path>/<ID>` (`port 8000 not published`,
`claims a path that is not its own`, `duplicate hostname`, ...), or `not on any
host` when no register found a running container with that ID. A service whose
virtual host or TCP port another service already holds is marked `NAME TAKEN` with
the reason, settled as `buoy listen` settles it (the first to claim a name keeps it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from buoy.cli_common import Common, common_options
from buoy.etcd.keys import KeyError_, KeyLayout
from buoy.etcd.records import AnnounceRecord, RecordError, ServiceRecord
from buoy.etcd.store import EtcdStore, KeyValue, StoreError

NOT_ON_ANY_HOST = "not on any host (no register runs a container with this ID)"
STATUS_FIELDS = ("HOST", "CONTAINER", "SUMMARY", "REASON")
STATUS_MAX = 400


def collect(store: EtcdStore, keys: KeyLayout) -> dict[str, Any]:
    """Read both trees; group instances by path; add each lease's TTL left."""
    ttl_cache: dict[int, int] = {}

    def ttl(lease: int) -> int | None:
        if not lease:
            return None
        if lease not in ttl_cache:
            ttl_cache[lease] = store.lease_ttl(lease)
        return ttl_cache[lease]

    out: dict[str, Any] = {}
    for kind, parse, load in (
        ("announce", keys.parse_announce_key, AnnounceRecord.from_json),
        ("services", keys.parse_service_key, ServiceRecord.from_json),
    ):
        _, kvs = store.get_prefix(keys.root(kind))
        out[kind] = _group(kvs, parse, load, ttl)
        if kind == "services":
            clashes = name_clashes(kvs, keys)
    _, status = store.get_prefix(keys.status_root)
    verdicts = {kv.key[len(keys.status_root):]: load_status(kv.value) for kv in status}
    routed = {f"{path}/{e['id']}" for path, entries in out["services"].items() for e in entries}
    for kind in ("announce", "services"):
        for path, entries in out[kind].items():
            for e in entries:
                if path in clashes and "error" not in e:
                    e["name_taken"] = clashes[path]
    for path, entries in out["announce"].items():
        for e in entries:
            if "error" in e:
                continue
            where = f"{path}/{e['id']}"
            if where in routed:
                e["routed"] = True
                continue
            e["routed"] = False
            e["status"] = verdicts.get(where.lstrip("/")) or {"SUMMARY": NOT_ON_ANY_HOST}
    return out


def name_clashes(kvs: list[KeyValue], keys: KeyLayout) -> dict[str, str]:
    """Service path → why `buoy listen` does not route it: another service holds its virtual
    host or TCP port (first claimed by etcd's create revision)."""
    from buoy.listen.groups import GroupedView, resolve  # the same pure rule listen applies

    view = GroupedView(keys)
    view.update({kv.key: kv for kv in kvs})
    routing = resolve(view.groups.values())
    return dict(zip(routing.refused, routing.errors, strict=True))


def load_status(value: bytes) -> dict[str, str]:
    """A /status record → its known string fields (anything else is dropped, never shown raw)."""
    try:
        data = json.loads(value)
    except ValueError:
        return {"SUMMARY": "unreadable status record"}
    if not isinstance(data, dict):
        return {"SUMMARY": "unreadable status record"}
    out = {}
    for name in STATUS_FIELDS:
        text = data.get(name)
        if isinstance(text, str):
            out[name] = "".join(ch if ch.isprintable() else "?" for ch in text)[:STATUS_MAX]
    return out or {"SUMMARY": "unreadable status record"}


def _group(kvs: list[KeyValue], parse: Callable[[str], Any], load: Callable[[bytes], Any],
           ttl: Callable[[int], int | None]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for kv in kvs:
        try:
            path, instance_id = parse(kv.key)
            record = load(kv.value).to_dict()
            entry = {"id": instance_id, "record": record, "ttl": ttl(kv.lease)}
        except (KeyError_, RecordError) as exc:
            path, entry = "(invalid)", {"id": kv.key, "error": str(exc), "ttl": ttl(kv.lease)}
        groups.setdefault(str(path), []).append(entry)
    return dict(sorted(groups.items()))


def render_tree(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for kind in ("announce", "services"):
        groups = data.get(kind, {})
        lines.append(f"/{kind}  ({sum(len(v) for v in groups.values())} instances)")
        for path, entries in groups.items():
            lines.append(f"  {path}")
            for e in entries:
                ttl = f"ttl {e['ttl']}s" if e.get("ttl") is not None else "no lease"
                if "error" in e:
                    lines.append(f"    {e['id']}  INVALID: {e['error']}  {ttl}")
                    continue
                r = e["record"]
                where = (f"{r['IP']}:{r['EXT_PORT']}  host {r['HOST']}" if "IP" in r
                         else f"port {r['PORT']}")
                taken = f"  NAME TAKEN: {e['name_taken']}" if "name_taken" in e else ""
                lines.append(f"    {e['id']}  {r['TYPE']}  {where}  {ttl}{_verdict(e)}{taken}")
    return "\n".join(lines)


def _verdict(entry: dict[str, Any]) -> str:
    """`  routed`, or `  NOT ROUTED: <why> (host ..., container ...)` for an announce."""
    if "routed" not in entry:
        return ""
    if entry["routed"]:
        return "  routed"
    status = entry.get("status") or {}
    where = ", ".join(f"{k.lower()} {status[k]}" for k in ("HOST", "CONTAINER") if k in status)
    return f"  NOT ROUTED: {status.get('SUMMARY', 'refused')}" + (f" ({where})" if where else "")


@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a tree.")
@common_options
def ls(common: Common, as_json: bool) -> int:
    """Show /announce and /services: service → instances with IP:port and TTL left, and
    beside each announce whether it is routed or why not."""
    store = EtcdStore(common.etcd)
    try:
        data = collect(store, common.keys)
    except StoreError as exc:
        raise click.ClickException(f"etcd: {exc}") from None
    finally:
        store.close()
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else render_tree(data))
    return 0
