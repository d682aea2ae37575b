"""Settings every command shares (etcd connection, key prefix, logging), as click options.

Only the CLI layer reads the environment: each flag has one environment variable,
and precedence is default < environment < flag.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import RecordError, check_ip
from buoy.etcd.settings import DEFAULT_ENDPOINTS, EtcdSettings, positive_float, positive_int

if TYPE_CHECKING:  # the store (gRPC) loads only in agents that use it, never in announce
    from buoy.etcd.store import EtcdStore
    from buoy.ops.health import Health

F = TypeVar("F", bound=Callable[..., Any])


class SettingError(click.ClickException):
    """An invalid setting: one line naming the setting and the rule, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"buoy: error: {self.format_message()}", err=True)


@dataclass(frozen=True)
class Common:
    """What every agent gets from the shared options."""

    etcd: EtcdSettings
    keys: KeyLayout


def setting(fn: Callable[[], Any]) -> Any:
    """Run a validating constructor; turn its RecordError into a SettingError."""
    try:
        return fn()
    except RecordError as exc:
        raise SettingError(str(exc)) from None


def common_options(func: F) -> F:
    """Add --etcd-*, --prefix and --log-level; pass `common: Common` to the command."""
    options = [
        click.option("--etcd-endpoints", envvar="BUOY_ETCD_ENDPOINTS", default=DEFAULT_ENDPOINTS,
                     show_default=True, help="Comma-separated etcd endpoints (http:// or https://)."),
        click.option("--etcd-ca", envvar="BUOY_ETCD_CA", default=None,
                     help="CA certificate for https:// endpoints."),
        click.option("--etcd-cert", envvar="BUOY_ETCD_CERT", default=None,
                     help="Client certificate (with --etcd-key)."),
        click.option("--etcd-key", envvar="BUOY_ETCD_KEY", default=None,
                     help="Client private key (with --etcd-cert)."),
        click.option("--etcd-user", envvar="BUOY_ETCD_USER", default=None,
                     help="etcd user name (with --etcd-password; use TLS)."),
        click.option("--etcd-password", envvar="BUOY_ETCD_PASSWORD", default=None,
                     help="etcd password."),
        click.option("--etcd-timeout", envvar="BUOY_ETCD_TIMEOUT", default="5",
                     help="Seconds before one etcd request times out."),
        click.option("--prefix", envvar="BUOY_PREFIX", default="",
                     help="Global key prefix, so several installations share one etcd."),
        click.option("--log-level", envvar="BUOY_LOG_LEVEL", default="info",
                     type=click.Choice(["debug", "info", "warning", "error"]),
                     help="Log level."),
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, etcd_endpoints: str, etcd_ca: str | None, etcd_cert: str | None,
                etcd_key: str | None, etcd_user: str | None, etcd_password: str | None,
                etcd_timeout: str, prefix: str, log_level: str, **kwargs: Any) -> Any:
        setup_logging(log_level)
        timeout = setting(lambda: positive_float("BUOY_ETCD_TIMEOUT", etcd_timeout))
        etcd = setting(lambda: EtcdSettings.from_strings(
            etcd_endpoints, ca_cert=etcd_ca, cert=etcd_cert, key=etcd_key, user=etcd_user,
            password=etcd_password, timeout=timeout))
        keys = setting(lambda: KeyLayout(prefix))
        return func(*args, common=Common(etcd, keys), **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class MetricsSettings:
    """Where /healthz and /metrics are served."""

    bind: str
    port: int


def metrics_options(func: F) -> F:
    """Add --metrics-port and --metrics-bind; pass `metrics: MetricsSettings | None` (None: off)."""

    @functools.wraps(func)
    def wrapper(*args: Any, metrics_port: str, metrics_bind: str, **kwargs: Any) -> Any:
        port = setting(lambda: positive_int("BUOY_METRICS_PORT", metrics_port, minimum=0,
                                            maximum=65535))
        bind = setting(lambda: check_ip("BUOY_METRICS_BIND", metrics_bind.strip()))
        return func(*args, metrics=MetricsSettings(bind, port) if port else None, **kwargs)

    wrapper = click.option("--metrics-bind", envvar="BUOY_METRICS_BIND", default="127.0.0.1",
                           show_default=True, help="Address /healthz and /metrics listen on.")(wrapper)
    wrapper = click.option("--metrics-port", envvar="BUOY_METRICS_PORT", default="0",
                           show_default=True,
                           help="Port of /healthz and /metrics (0: not served).")(wrapper)
    return wrapper  # type: ignore[return-value]


class Agent(Protocol):
    def run(self) -> int: ...


def run_agent(name: str, common: Common, metrics: MetricsSettings | None,
              build: Callable[[EtcdStore, Health], Agent]) -> int:
    """The common life of an agent: health state, an observed store whose credentials
    are checked, /healthz and /metrics while it runs (when asked for), then `run()`."""
    from buoy.etcd.store import EtcdStore
    from buoy.ops.health import Health

    health = Health(name)
    store = check_credentials(EtcdStore(common.etcd, observer=health.store_result))
    with serving_health(health, metrics):
        return build(store, health).run()


@contextmanager
def serving_health(health: Health, metrics: MetricsSettings | None) -> Iterator[None]:
    """Serve /healthz and /metrics while the agent runs (nothing when `metrics` is None)."""
    if metrics is None:
        yield
        return
    from buoy.ops.health import MetricsServer  # the Prometheus client loads only when asked for

    try:
        server = MetricsServer(health, metrics.bind, metrics.port).start()
    except OSError as exc:
        raise SettingError(f"BUOY_METRICS_PORT: cannot listen on {metrics.bind}:{metrics.port}: "
                           f"{exc.strerror or exc}") from None
    try:
        yield
    finally:
        server.close()


def check_credentials(store: EtcdStore) -> EtcdStore:
    """Refuse at start (exit 2) a user/password etcd rejects.

    An unreachable etcd is not an error here: the agent starts and retries. A password
    rotated while an agent runs is retried too, with each failure logged.
    """
    from buoy.etcd.store import StoreError, StoreUnavailable

    if store.settings.user:
        try:
            store.check_credentials()
        except StoreUnavailable:
            pass
        except StoreError as exc:
            raise SettingError(f"BUOY_ETCD_PASSWORD: etcd refused the credentials ({exc})") from None
    return store


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    logging.getLogger("grpc").setLevel(logging.ERROR)
