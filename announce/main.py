"""Run announce: the etcd client, the credential check, health, the loop (no click here).

`python -m buoy.announce` (announce/__main__.py) is what supervisord runs in every container:
settings from the environment alone, so click is never loaded there. `buoy announce`
(announce/cli.py) collects the same settings from flags and calls the same `run`.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

from buoy.announce.config import AnnounceConfig
from buoy.etcd.records import RecordError
from buoy.etcd.settings import EtcdSettings

if TYPE_CHECKING:
    from buoy.ops.health import Health



def run(config: AnnounceConfig, etcd: EtcdSettings, key: str,
        serving: Callable[[Health], AbstractContextManager[object]] | None = None) -> int:
    """Announce until SIGTERM/SIGINT. Raises RecordError for a setting etcd or the TLS files
    refuse at start (bad credentials, a CA that does not load)."""
    from buoy.announce.agent import Announcer
    from buoy.announce.client import AnnounceClient
    from buoy.etcd.gateway import GatewayRefused, GatewayUnavailable
    from buoy.ops.health import Health

    health = Health("announce")
    client = AnnounceClient(etcd, observer=health.store_result)
    if etcd.user:
        try:  # refuse bad credentials at start; an unreachable etcd is retried later
            client.authenticate()
        except GatewayUnavailable:
            pass
        except GatewayRefused as exc:
            raise RecordError("BUOY_ETCD_PASSWORD", f"etcd refused the credentials ({exc})",
                              None) from None
    with serving(health) if serving else nullcontext():
        return Announcer(config, client, key, health).run()


def main() -> int:
    """`python -m buoy.announce`: settings from the environment; errors in one line, exit 2."""
    from buoy.announce.settings import from_env, setup_logging

    try:
        settings = from_env(os.environ, socket.gethostname())
        setup_logging(settings.log_level)
        serving = None
        if settings.metrics is not None:
            serving = _metrics_server(*settings.metrics)
        return run(settings.config, settings.etcd, settings.key, serving)
    except RecordError as exc:
        print(f"buoy: error: {exc}", file=sys.stderr, flush=True)
        return 2


def _metrics_server(bind: str, port: int) -> Callable[[Health], AbstractContextManager[object]]:
    """/healthz and /metrics as `buoy announce --metrics-port` serves them (click and the
    Prometheus client load only then); a port that cannot be bound is a RecordError."""
    from buoy.cli_common import MetricsSettings, SettingError, serving_health

    @contextmanager
    def serve(health: Health) -> Iterator[object]:
        served = serving_health(health, MetricsSettings(bind, port))
        try:
            served.__enter__()
        except SettingError as exc:
            rule = exc.format_message().removeprefix("BUOY_METRICS_PORT: ")
            raise RecordError("BUOY_METRICS_PORT", rule, port) from None
        try:
            yield health
        finally:
            served.__exit__(None, None, None)

    return serve
