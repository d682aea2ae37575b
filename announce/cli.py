"""`buoy announce`: click options → AnnounceConfig → Announcer.

This is the command inside every container, so it loads only what it uses: no gRPC
(etcd is reached through its JSON gateway, `buoy.etcd_gateway`), no Docker SDK, no
templates, no DNS library, no Prometheus client unless --metrics-port asks for it.
"""

from __future__ import annotations

import socket

import click

from announce.config import AnnounceConfig, build_record
from buoy.cli_common import (
    Common,
    MetricsSettings,
    SettingError,
    common_options,
    metrics_options,
    positive_float,
    positive_int,
    serving_health,
    setting,
)
from buoy.records import DEFAULT_ZONE, check_instance


@click.command()
@click.option("--path", "path", envvar="ANNOUNCE_PATH", help="/<scope>/<app>/<env>/<service>[/<name>].")
@click.option("--port", envvar="PORT", help="The container port the service listens on.")
@click.option("--type", "type_", envvar="TYPE", help="HTTP or TCP.")
@click.option("--check", envvar="CHECK", default=None,
              help="Announce only while healthy: an HTTP path (GET 127.0.0.1:PORT<path>) or 'tcp'.")
@click.option("--id", "instance_id", envvar="ANNOUNCE_ID", default=None,
              help="Instance id [default: the hostname].")
@click.option("--ttl", envvar="ANNOUNCE_TTL", default="15", show_default=True,
              help="Lease TTL in seconds.")
@click.option("--interval", envvar="ANNOUNCE_INTERVAL", default="5", show_default=True,
              help="Seconds between lease refreshes.")
@click.option("--drain", envvar="ANNOUNCE_DRAIN", default="0", show_default=True,
              help="Seconds to wait after withdrawing on SIGTERM before exiting.")
@click.option("--check-interval", envvar="ANNOUNCE_CHECK_INTERVAL", default="2",
              show_default=True, help="Seconds between health checks.")
@click.option("--check-timeout", envvar="ANNOUNCE_CHECK_TIMEOUT", default="1", show_default=True,
              help="Seconds one health check may take.")
@click.option("--check-failures", envvar="ANNOUNCE_CHECK_FAILURES", default="3",
              show_default=True, help="Consecutive failed checks before withdrawing.")
@click.option("--zone", envvar="BUOY_DNS_ZONE", default=DEFAULT_ZONE, show_default=True,
              help="DNS zone register names instances in (the name must fit 253 characters).")
@metrics_options
@common_options
def announce(common: Common, metrics: MetricsSettings | None, path: str | None,
             port: str | None, type_: str | None, check: str | None, instance_id: str | None,
             ttl: str, interval: str, drain: str,
             check_interval: str, check_timeout: str, check_failures: str, zone: str) -> int:
    """Keep this container's record under /announce alive (runs inside the container)."""
    chosen_id = instance_id or socket.gethostname()
    parsed, record = setting(lambda: build_record(
        path=path, port=port, type_=type_, instance_id=chosen_id, check=check))
    setting(lambda: check_instance(parsed, record.id, zone))  # what register would refuse
    config = setting(lambda: AnnounceConfig(
        path=parsed, record=record,
        ttl=positive_int("ANNOUNCE_TTL", ttl, minimum=2, maximum=86400),
        interval=positive_float("ANNOUNCE_INTERVAL", interval),
        drain=non_negative("ANNOUNCE_DRAIN", drain),
        check_interval=positive_float("ANNOUNCE_CHECK_INTERVAL", check_interval),
        check_timeout=positive_float("ANNOUNCE_CHECK_TIMEOUT", check_timeout),
        check_failures=positive_int("ANNOUNCE_CHECK_FAILURES", check_failures, maximum=1000)))
    key = common.keys.announce_key(parsed, record.id)
    return run(config, common, metrics, key)


def run(config: AnnounceConfig, common: Common, metrics: MetricsSettings | None,
        key: str) -> int:
    from announce.agent import Announcer
    from announce.client import AnnounceClient
    from buoy.etcd_gateway import GatewayRefused, GatewayUnavailable
    from buoy.health import Health

    health = Health("announce")
    client = setting(lambda: AnnounceClient(common.etcd, observer=health.store_result))
    if common.etcd.user:
        try:  # refuse bad credentials at start; an unreachable etcd is retried later
            client.authenticate()
        except GatewayUnavailable:
            pass
        except GatewayRefused as exc:
            raise SettingError(f"BUOY_ETCD_PASSWORD: etcd refused the credentials ({exc})") \
                from None
    with serving_health(health, metrics):
        return Announcer(config, client, key, health).run()


def non_negative(name: str, text: str) -> float:
    return 0.0 if str(text).strip() in ("0", "0.0") else positive_float(name, text)
