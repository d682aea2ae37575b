"""`buoy listen`: click options → ListenConfig → Listener."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

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
    parse_acme_directory,
    parse_acme_hosts,
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
@click.option("--https-bind", envvar="BUOY_HTTPS_BIND", default=None,
              help="Address:port of the HTTPS frontend (SNI, one certificate per virtual host) "
                   "[default: no HTTPS].")
@click.option("--default-cert", envvar="BUOY_DEFAULT_CERT", default=None,
              help="PEM (chain + key) served to names without a certificate [default: a "
                   "self-signed one made in the state dir].")
@click.option("--cert-dir", envvar="BUOY_CERT_DIR", default=None,
              help="Directory of <vhost>.pem files (chain + key); wins over /certs in etcd.")
@click.option("--acme-directory", envvar="BUOY_ACME_DIRECTORY", default=None,
              help="ACME directory URL: take part in getting certificates through ACME "
                   "(HTTP-01) for the hosts that ask for it.")
@click.option("--acme-email", envvar="BUOY_ACME_EMAIL", default=None,
              help="Contact address of the ACME account.")
@click.option("--acme-ca", envvar="BUOY_ACME_CA", default=None,
              help="CA bundle that signs the ACME server's own HTTPS certificate.")
@click.option("--acme-hosts", envvar="BUOY_ACME_HOSTS", default=None,
              help="Comma-separated virtual hosts that get ACME certificates (besides those "
                   "whose services announce ACME).")
@click.option("--acme-all", envvar="BUOY_ACME_ALL", is_flag=True,
              help="Every routed virtual host gets an ACME certificate.")
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
           confirm: str, https_bind: str | None, default_cert: str | None, cert_dir: str | None,
           acme_directory: str | None, acme_email: str | None, acme_ca: str | None,
           acme_hosts: str | None, acme_all: bool, once: bool, dry_run: bool) -> int:
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
    https = setting(lambda: https_settings(
        https_bind, default_cert, cert_dir, acme_directory, acme_email, acme_ca, acme_hosts,
        acme_all, http_port))
    if https and not once and haproxy_socket is None:
        taken = bind_taken(https["https_bind"], https["https_port"])
        if taken is not None:
            setting(lambda: _fail("BUOY_HTTPS_BIND", f"is taken by another process ({taken})",
                                  https_bind))
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
        once=once, dry_run=dry_run, etcd_timeout=common.etcd.timeout, **https))
    return run_agent("listen", common, None if once else metrics,
                     lambda store, health: Listener(config, store, common.keys, health))


def https_settings(https_bind: str | None, default_cert: str | None, cert_dir: str | None,
                   acme_directory: str | None, acme_email: str | None, acme_ca: str | None,
                   acme_hosts: str | None, acme_all: bool, http_port: int) -> dict[str, Any]:
    """The HTTPS part of ListenConfig, checked; empty without --https-bind."""
    if not https_bind:
        for name, value in (("--default-cert", default_cert), ("--cert-dir", cert_dir),
                            ("--acme-directory", acme_directory)):
            if value:
                _fail(name, "needs --https-bind", value)
        return {}
    bind, port = parse_http_bind(https_bind, "BUOY_HTTPS_BIND")
    if port == http_port:
        _fail("BUOY_HTTPS_BIND", "must use another port than BUOY_HTTP_BIND", https_bind)
    out: dict[str, Any] = {"https_bind": bind, "https_port": port}
    if default_cert:
        from buoy.listen.certs import CertError, parse_pem  # cryptography: only with HTTPS

        try:
            parse_pem(Path(default_cert).read_text(), default_cert)
        except (OSError, CertError) as exc:
            _fail("BUOY_DEFAULT_CERT", f"must be a readable PEM with a matching key ({exc})",
                  default_cert)
        out["default_cert"] = Path(default_cert).resolve()
    if cert_dir:
        if not Path(cert_dir).is_dir():
            _fail("BUOY_CERT_DIR", "must be a directory", cert_dir)
        out["cert_dir"] = Path(cert_dir).resolve()
    if acme_directory:
        out["acme_directory"] = parse_acme_directory(acme_directory)
        if acme_ca:
            if not Path(acme_ca).is_file():
                _fail("BUOY_ACME_CA", "must be a readable file", acme_ca)
            out["acme_ca"] = Path(acme_ca).resolve()
        out["acme_email"] = acme_email or None
        out["acme_hosts"] = parse_acme_hosts(acme_hosts)
        out["acme_all"] = acme_all
    elif acme_hosts or acme_all:
        _fail("--acme-hosts/--acme-all", "need --acme-directory", acme_hosts or "--acme-all")
    return out


def non_negative(name: str, text: str) -> float:
    return 0.0 if str(text).strip() in ("0", "0.0") else positive_float(name, text)


def _fail(name: str, rule: str, value: object) -> None:
    raise RecordError(name, rule, value)
