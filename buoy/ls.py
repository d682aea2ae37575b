"""`buoy ls`: what is in /announce and /services, as a tree or as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from buoy.cli_common import Common, common_options
from buoy.keys import KeyError_, KeyLayout
from buoy.records import AnnounceRecord, RecordError, ServiceRecord
from buoy.store import EtcdStore, KeyValue, StoreError


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
    return out


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
                lines.append(f"    {e['id']}  {r['TYPE']}  {where}  {ttl}")
    return "\n".join(lines)


@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a tree.")
@common_options
def ls(common: Common, as_json: bool) -> int:
    """Show /announce and /services: service → instances with IP:port and TTL left."""
    store = EtcdStore(common.etcd)
    try:
        data = collect(store, common.keys)
    except StoreError as exc:
        raise click.ClickException(f"etcd: {exc}") from None
    finally:
        store.close()
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else render_tree(data))
    return 0
