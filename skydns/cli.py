"""`buoy dns`: click options → DnsConfig → DnsAgent."""

from __future__ import annotations

import click

from buoy.cli_common import (
    Common,
    MetricsSettings,
    SettingError,
    common_options,
    metrics_options,
    run_agent,
    setting,
)
from buoy.etcd.dns_records import DEFAULT_ZONE
from buoy.etcd.settings import positive_float, positive_int
from buoy.skydns.config import DEFAULT_LISTEN, DnsConfig, parse_listen, parse_zones, served_zone


@click.command()
@click.option("--zone", envvar="BUOY_DNS_ZONE", default=DEFAULT_ZONE, show_default=True,
              help="The zone answered for (instance and service names).")
@click.option("--extra-zone", "extra_zones", envvar="BUOY_DNS_EXTRA_ZONES", multiple=True,
              help="More zones answered for, e.g. the virtual hosts listen publishes "
                   "(repeat the flag or give a comma list).")
@click.option("--listen", envvar="BUOY_DNS_LISTEN", default=DEFAULT_LISTEN, show_default=True,
              help="IP:PORT to serve UDP and TCP on.")
@click.option("--lease-poll", envvar="BUOY_DNS_LEASE_POLL", default="1", show_default=True,
              help="Shortest gap in seconds between two reads of one lease's remaining time.")
@click.option("--cache-size", envvar="BUOY_DNS_CACHE_SIZE", default="10000", show_default=True,
              help="Finished answers kept for reuse (a change drops only those it alters).")
@metrics_options
@common_options
def dns(common: Common, metrics: MetricsSettings | None, zone: str,
        extra_zones: tuple[str, ...], listen: str, lease_poll: str, cache_size: str) -> int:
    """Answer DNS (A, AAAA, SRV, TXT, CNAME, PTR, MX, NS) for the records under /skydns."""
    from buoy.skydns.agent import DnsAgent

    host, port = setting(lambda: parse_listen(listen))
    config = setting(lambda: DnsConfig(
        zone=served_zone(zone), extra_zones=parse_zones(extra_zones), host=host, port=port,
        lease_poll=positive_float("BUOY_DNS_LEASE_POLL", lease_poll),
        cache_size=positive_int("BUOY_DNS_CACHE_SIZE", cache_size, maximum=10**7)))
    from buoy.skydns.server import ListenError

    try:
        return run_agent("dns", common, metrics,
                         lambda store, health: DnsAgent(config, store, common.keys, health=health))
    except ListenError as exc:
        raise SettingError(f"BUOY_DNS_LISTEN: {exc}") from None
