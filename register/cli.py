"""`buoy register`: click options → RegisterConfig → Register."""

from __future__ import annotations

import socket

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
from buoy.register.config import RegisterConfig, default_host_ip


@click.command()
@click.option("--host-id", envvar="BUOY_HOST_ID", default=None,
              help="This Docker host's id, written as HOST [default: the hostname].")
@click.option("--host-ip", envvar="BUOY_HOST_IP", default=None,
              help="IP written for published ports [default: IPv4 of the default-route "
                   "interface].")
@click.option("--ttl", envvar="BUOY_REGISTER_TTL", default="15", show_default=True,
              help="Lease TTL in seconds of the records register writes.")
@click.option("--resync", envvar="BUOY_REGISTER_RESYNC", default="30", show_default=True,
              help="Seconds between full reconciles with Docker and etcd.")
@click.option("--internal", envvar="BUOY_INTERNAL", is_flag=True, default=False,
              help="Use the container's IP on --network and PORT instead of the published port.")
@click.option("--network", envvar="BUOY_NETWORK", default=None,
              help="The Docker network whose container IP --internal uses.")
@click.option("--zone", envvar="BUOY_DNS_ZONE", default=DEFAULT_ZONE, show_default=True,
              help="DNS zone of the SkyDNS instance records.")
@click.option("--docker-host", envvar="DOCKER_HOST", default="unix:///var/run/docker.sock",
              show_default=True, help="Docker Engine API address.")
@click.option("--deregister-on-exit", envvar="BUOY_DEREGISTER_ON_EXIT", is_flag=True,
              default=False, help="Revoke the lease on exit so every record goes at once.")
@metrics_options
@common_options
def register(common: Common, metrics: MetricsSettings | None, host_id: str | None,
             host_ip: str | None, ttl: str, resync: str,
             internal: bool, network: str | None, zone: str, docker_host: str,
             deregister_on_exit: bool) -> int:
    """Turn this host's announced containers into /services and SkyDNS records."""
    from buoy.register.agent import Register

    ip = host_ip or default_host_ip()
    if not ip:
        raise SettingError("BUOY_HOST_IP: no default route with an IPv4 address; set --host-ip")
    config = setting(lambda: RegisterConfig(
        host_id=host_id or socket.gethostname(), host_ip=ip,
        ttl=positive_int("BUOY_REGISTER_TTL", ttl, minimum=3, maximum=86400),
        resync=positive_float("BUOY_REGISTER_RESYNC", resync), internal=internal,
        network=network or None, zone=zone, docker_host=docker_host,
        deregister_on_exit=deregister_on_exit))
    return run_agent("register", common, metrics,
                     lambda store, health: Register(config, store, common.keys, health))
