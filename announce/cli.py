"""`buoy announce`: click options → announce.settings → announce.main.run.

Inside the containers supervisord runs `python -m buoy.announce` instead (the same settings
from the environment alone, without click). Either way announce loads only what it uses:
no gRPC (etcd is reached through its JSON gateway, `buoy.etcd.gateway`), no Docker SDK,
no templates, no DNS library, no Prometheus client unless --metrics-port asks for it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, TypeVar

import click

from buoy.announce.settings import ANNOUNCE, announce_config
from buoy.cli_common import (
    Common,
    MetricsSettings,
    common_options,
    metrics_options,
    serving_health,
    setting,
)

F = TypeVar("F", bound=Callable[..., Any])


def _option(flag: str, env: str, help: str, dest: str | None = None) -> Callable[[F], F]:
    """A flag with its environment variable and the default from announce.settings."""
    names = (flag, dest) if dest else (flag,)
    return click.option(*names, envvar=env, default=ANNOUNCE[env],
                        show_default=ANNOUNCE[env] is not None, help=help)


@click.command()
@_option("--path", "ANNOUNCE_PATH", "/<scope>/<app>/<env>/<service>[/<name>].", "path")
@_option("--port", "PORT", "The container port the service listens on.")
@_option("--type", "TYPE", "HTTP or TCP.", "type_")
@_option("--check", "CHECK",
         "Announce only while healthy: an HTTP path (GET 127.0.0.1:PORT<path>) or 'tcp'.")
@_option("--id", "ANNOUNCE_ID", "Instance id [default: the hostname].", "instance_id")
@_option("--ttl", "ANNOUNCE_TTL", "Lease TTL in seconds.")
@_option("--interval", "ANNOUNCE_INTERVAL", "Seconds between lease refreshes.")
@_option("--drain", "ANNOUNCE_DRAIN", "Seconds to wait after withdrawing on SIGTERM before exiting.")
@_option("--check-interval", "ANNOUNCE_CHECK_INTERVAL", "Seconds between health checks.")
@_option("--check-timeout", "ANNOUNCE_CHECK_TIMEOUT", "Seconds one health check may take.")
@_option("--check-failures", "ANNOUNCE_CHECK_FAILURES",
         "Consecutive failed checks before withdrawing.")
@_option("--zone", "BUOY_DNS_ZONE",
         "DNS zone register names instances in (the name must fit 253 characters).")
@metrics_options
@common_options
def announce(common: Common, metrics: MetricsSettings | None, path: str | None,
             port: str | None, type_: str | None, check: str | None, instance_id: str | None,
             ttl: str, interval: str, drain: str,
             check_interval: str, check_timeout: str, check_failures: str, zone: str) -> int:
    """Keep this container's record under /announce alive (runs inside the container)."""
    from buoy.announce.main import run

    values = {"ANNOUNCE_PATH": path, "PORT": port, "TYPE": type_, "CHECK": check,
              "ANNOUNCE_ID": instance_id, "ANNOUNCE_TTL": ttl, "ANNOUNCE_INTERVAL": interval,
              "ANNOUNCE_DRAIN": drain, "ANNOUNCE_CHECK_INTERVAL": check_interval,
              "ANNOUNCE_CHECK_TIMEOUT": check_timeout, "ANNOUNCE_CHECK_FAILURES": check_failures,
              "BUOY_DNS_ZONE": zone}
    config, key = setting(lambda: announce_config(values.get, socket.gethostname(), common.keys))
    return int(setting(lambda: run(config, common.etcd, key,
                                   lambda health: serving_health(health, metrics))))
