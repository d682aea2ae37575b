"""announce's settings from their raw strings, with no click: one set of names, defaults and
rules for `buoy announce` (click collects the strings from flags and the environment) and
`python -m buoy.announce` (the environment alone: what supervisord runs in every container).

Every error is a RecordError naming the setting, shown by both as one line with exit 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from buoy.announce.config import AnnounceConfig, build_record
from buoy.etcd.keys import KeyLayout
from buoy.etcd.records import DEFAULT_ZONE, RecordError, check_instance, check_ip
from buoy.etcd.settings import DEFAULT_ENDPOINTS, EtcdSettings, positive_float, positive_int

# announce's own settings: environment variable → default (None: no default).
ANNOUNCE = {
    "ANNOUNCE_PATH": None, "PORT": None, "TYPE": None, "CHECK": None, "ANNOUNCE_ID": None,
    "ANNOUNCE_TTL": "15", "ANNOUNCE_INTERVAL": "5", "ANNOUNCE_DRAIN": "0",
    "ANNOUNCE_CHECK_INTERVAL": "2", "ANNOUNCE_CHECK_TIMEOUT": "1",
    "ANNOUNCE_CHECK_FAILURES": "3", "BUOY_DNS_ZONE": DEFAULT_ZONE,
}
# The settings every agent shares (buoy.cli_common's flags), read by `python -m buoy.announce`.
COMMON = {
    "BUOY_ETCD_ENDPOINTS": DEFAULT_ENDPOINTS, "BUOY_ETCD_CA": None, "BUOY_ETCD_CERT": None,
    "BUOY_ETCD_KEY": None, "BUOY_ETCD_USER": None, "BUOY_ETCD_PASSWORD": None,
    "BUOY_ETCD_TIMEOUT": "5", "BUOY_PREFIX": "", "BUOY_LOG_LEVEL": "info",
    "BUOY_METRICS_PORT": "0", "BUOY_METRICS_BIND": "127.0.0.1",
}
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    """Everything `python -m buoy.announce` needs, validated."""

    config: AnnounceConfig
    key: str
    etcd: EtcdSettings
    log_level: str
    metrics: tuple[str, int] | None  # (bind, port), None: not served


def announce_config(get: Callable[[str], str | None], hostname: str,
                    keys: KeyLayout) -> tuple[AnnounceConfig, str]:
    """announce's own settings (`get(name)` is the raw string, None when unset) and its key."""
    def value(name: str) -> str | None:
        raw = get(name)
        return ANNOUNCE[name] if raw is None else raw

    path, record = build_record(path=value("ANNOUNCE_PATH"), port=value("PORT"),
                                type_=value("TYPE"),
                                instance_id=value("ANNOUNCE_ID") or hostname,
                                check=value("CHECK") or None)
    check_instance(path, record.id, value("BUOY_DNS_ZONE") or DEFAULT_ZONE)  # register's rule
    drain = str(value("ANNOUNCE_DRAIN")).strip()
    config = AnnounceConfig(
        path=path, record=record,
        ttl=positive_int("ANNOUNCE_TTL", value("ANNOUNCE_TTL"), minimum=2, maximum=86400),
        interval=positive_float("ANNOUNCE_INTERVAL", value("ANNOUNCE_INTERVAL")),
        drain=0.0 if drain in ("0", "0.0") else positive_float("ANNOUNCE_DRAIN", drain),
        check_interval=positive_float("ANNOUNCE_CHECK_INTERVAL", value("ANNOUNCE_CHECK_INTERVAL")),
        check_timeout=positive_float("ANNOUNCE_CHECK_TIMEOUT", value("ANNOUNCE_CHECK_TIMEOUT")),
        check_failures=positive_int("ANNOUNCE_CHECK_FAILURES", value("ANNOUNCE_CHECK_FAILURES"),
                                    maximum=1000))
    return config, keys.announce_key(path, record.id)


def from_env(env: Mapping[str, str], hostname: str) -> Settings:
    """All of `python -m buoy.announce`'s settings from the environment."""
    def common(name: str) -> str:
        return env.get(name) or COMMON[name] or ""

    level = common("BUOY_LOG_LEVEL").lower()
    if level not in LOG_LEVELS:
        raise RecordError("BUOY_LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}", level)
    etcd = EtcdSettings.from_strings(
        common("BUOY_ETCD_ENDPOINTS"), ca_cert=env.get("BUOY_ETCD_CA") or None,
        cert=env.get("BUOY_ETCD_CERT") or None, key=env.get("BUOY_ETCD_KEY") or None,
        user=env.get("BUOY_ETCD_USER") or None, password=env.get("BUOY_ETCD_PASSWORD") or None,
        timeout=positive_float("BUOY_ETCD_TIMEOUT", common("BUOY_ETCD_TIMEOUT")))
    config, key = announce_config(env.get, hostname, KeyLayout(common("BUOY_PREFIX")))
    port = positive_int("BUOY_METRICS_PORT", common("BUOY_METRICS_PORT"), minimum=0,
                        maximum=65535)
    bind = check_ip("BUOY_METRICS_BIND", common("BUOY_METRICS_BIND").strip())
    return Settings(config, key, etcd, level, (bind, port) if port else None)


def setup_logging(level: str) -> None:
    """The same format as every agent (buoy.cli_common.setup_logging)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
