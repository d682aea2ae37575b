"""`buoy listen`: click options → ListenConfig → Listener."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from buoy.cli_common import (
    Common,
    MetricsSettings,
    common_options,
    metrics_options,
    run_agent,
    setting,
)
from buoy.etcd.records import RecordError, check_ip
from buoy.etcd.settings import positive_float, positive_int
from buoy.listen.config import (
    ListenConfig,
    parse_http_bind,
    parse_listen_id,
    parse_listen_paths,
    parse_tcp_bind,
    parse_vhost_suffix,
)
from buoy.listen.guard import parse_max_drop
from buoy.listen.haproxy import bind_taken


@click.command()
@click.option("--listen-path", envvar="LISTEN_PATH",
              help="Comma-separated /services paths to route, e.g. /services/internal/app1/dev.")
@click.option("--http-bind", envvar="BUOY_HTTP_BIND", default="*:80", show_default=True,
              help="Address:port of the HTTP frontend.")
@click.option("--tcp-bind", envvar="BUOY_TCP_BIND", default="127.0.0.1", show_default=True,
              help="Address the TCP ambassador ports listen on.")
@click.option("--vhost-suffix", envvar="BUOY_VHOST_SUFFIX", default="",
              help="Appended to <service>.<env>.<app> to form the virtual host.")
@click.option("--template", envvar="BUOY_TEMPLATE", default=None,
              help="Jinja2 template for haproxy.cfg [default: the shipped one].")
@click.option("--state-dir", envvar="BUOY_STATE_DIR", default="/var/lib/buoy/listen",
              show_default=True, help="Where the live config, pin map and master socket live.")
@click.option("--haproxy", "haproxy_bin", envvar="BUOY_HAPROXY", default="/usr/sbin/haproxy",
              show_default=True, help="The haproxy binary.")
@click.option("--haproxy-socket", envvar="BUOY_HAPROXY_SOCKET", default=None,
              help="Drive an existing HAProxy master through this master socket (it must run "
                   "<state-dir>/haproxy.cfg) instead of starting one.")
@click.option("--drain-timeout", envvar="BUOY_DRAIN_TIMEOUT", default="30", show_default=True,
              help="Seconds a withdrawn instance may keep connections before it is removed.")
@click.option("--min-quiet", envvar="BUOY_MIN_QUIET", default="0.05", show_default=True,
              help="Seconds without changes before applying a burst.")
@click.option("--max-quiet", envvar="BUOY_MAX_QUIET", default="0.5", show_default=True,
              help="Longest a burst may delay an apply, in seconds.")
@click.option("--advertise-ip", envvar="BUOY_ADVERTISE_IP", default=None,
              help="Publish /skydns records for each routed virtual host pointing at this IP.")
@click.option("--listen-id", envvar="BUOY_LISTEN_ID", default=None,
              help="This listener's name in /skydns keys [default: the hostname].")
@click.option("--dns-ttl", envvar="BUOY_DNS_TTL", default="15", show_default=True,
              help="TTL (and lease) of the advertised /skydns records, seconds.")
@click.option("--max-drop", envvar="BUOY_MAX_DROP", default="50", show_default=True,
              help="Mass-removal guard: hold a change that removes more than this percentage "
                   "of a backend's servers at once (100: off).")
@click.option("--confirm", envvar="BUOY_CONFIRM", default="10", show_default=True,
              help="Seconds a held mass removal must persist before it is applied (0: off).")
@click.option("--once", is_flag=True, help="Render once from etcd, validate, write, and exit.")
@click.option("--dry-run", is_flag=True, help="With --once: print the config and exit, writing "
              "nothing.")
@metrics_options
@common_options
def listen(common: Common, metrics: MetricsSettings | None, listen_path: str | None,
           http_bind: str, tcp_bind: str, vhost_suffix: str, template: str | None,
           state_dir: str, haproxy_bin: str,
           haproxy_socket: str | None, drain_timeout: str, min_quiet: str, max_quiet: str,
           advertise_ip: str | None, listen_id: str | None, dns_ttl: str, max_drop: str,
           confirm: str, once: bool, dry_run: bool) -> int:
    """Route /services through HAProxy: Host-based HTTP and local TCP ports."""
    from buoy.listen.agent import Listener

    bind, http_port = setting(lambda: parse_http_bind(http_bind))
    if dry_run and not once:
        setting(lambda: _fail("--dry-run", "needs --once (it prints one render and exits)",
                              "--dry-run"))
    if not once and haproxy_socket is None:
        taken = bind_taken(bind, http_port)
        if taken is not None:
            setting(lambda: _fail("BUOY_HTTP_BIND", f"is taken by another process ({taken}); "
                                  "is another buoy listen running?", http_bind))
    if template is not None and not Path(template).is_file():
        setting(lambda: _fail("BUOY_TEMPLATE", "must be a readable file", template))
    config = setting(lambda: ListenConfig(
        watch_prefixes=parse_listen_paths(listen_path, common.keys),
        http_bind=bind, http_port=http_port, tcp_bind=parse_tcp_bind(tcp_bind),
        vhost_suffix=parse_vhost_suffix(vhost_suffix),
        template=Path(template).resolve() if template else None,
        state_dir=Path(state_dir).resolve(), haproxy_bin=haproxy_bin,
        haproxy_socket=Path(haproxy_socket) if haproxy_socket else None,
        drain_timeout=positive_float("BUOY_DRAIN_TIMEOUT", drain_timeout),
        min_quiet=positive_float("BUOY_MIN_QUIET", min_quiet),
        max_quiet=positive_float("BUOY_MAX_QUIET", max_quiet),
        advertise_ip=check_ip("BUOY_ADVERTISE_IP", advertise_ip) if advertise_ip else None,
        listen_id=parse_listen_id(listen_id or socket.gethostname()),
        dns_ttl=positive_int("BUOY_DNS_TTL", dns_ttl, minimum=2, maximum=86400),
        max_drop=parse_max_drop(max_drop), confirm=non_negative("BUOY_CONFIRM", confirm),
        once=once, dry_run=dry_run, etcd_timeout=common.etcd.timeout))
    return run_agent("listen", common, None if once else metrics,
                     lambda store, health: Listener(config, store, common.keys, health))


def non_negative(name: str, text: str) -> float:
    return 0.0 if str(text).strip() in ("0", "0.0") else positive_float(name, text)


def _fail(name: str, rule: str, value: object) -> None:
    raise RecordError(name, rule, value)
