"""Pure mapping: a container on this host + its announce → a service record, or a refusal.

Nothing here talks to Docker or etcd. `ContainerInfo` is the few facts register
needs from `docker inspect`; the functions decide which container an announce
belongs to, whether the container may claim it (no spoofing), and where the
service can be reached (published port and host IP, or the container IP on an
internal network).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from buoy.etcd.records import (
    AnnouncePath,
    AnnounceRecord,
    RecordError,
    ServiceRecord,
    check_check,
    check_label,
    check_port,
)

# Docker shows 12 hex digits as the short ID; fewer would match too much by chance.
MIN_ID_PREFIX = 12
LABEL_PATH, LABEL_PORT, LABEL_TYPE, LABEL_CHECK = "buoy.path", "buoy.port", "buoy.type", "buoy.check"
# HTTPS policy (listen --https-bind): label → announce field
LABEL_HTTPS_REDIRECT, LABEL_HSTS, LABEL_ACME = "buoy.https_redirect", "buoy.hsts", "buoy.acme"
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class ContainerInfo:
    """What register needs to know about one running container."""

    id: str
    name: str
    hostname: str
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    # "80/tcp" -> [(HostIp, HostPort), ...]
    ports: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    networks: Mapping[str, str] = field(default_factory=dict)  # network name -> IPv4
    host_network: bool = False  # NetworkMode "host": the container's ports are the host's


@dataclass(frozen=True)
class Refusal:
    """Why an announce gets no service record (logged once per reason).

    `summary` is the short verdict `buoy ls` shows beside the announce; `reason`
    is the whole story, with the container's name, for the log.
    """

    reason: str
    summary: str = "refused"


@dataclass(frozen=True)
class Placement:
    """How this register publishes services: host id, host IP, internal network."""

    host_id: str
    host_ip: str
    internal_network: str | None = None


def container_from_inspect(attrs: Mapping[str, Any]) -> ContainerInfo:
    """`docker inspect` output → ContainerInfo (tolerates missing sections)."""
    config = attrs.get("Config") or {}
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, sep, value = str(item).partition("=")
        if sep:
            env[key] = value
    ports: dict[str, tuple[tuple[str, str], ...]] = {}
    for spec, bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
        ports[spec] = tuple((str(b.get("HostIp") or ""), str(b.get("HostPort") or ""))
                            for b in bindings or [])
    networks = {name: str(net.get("IPAddress") or "") for name, net in
                ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).items()}
    mode = str((attrs.get("HostConfig") or {}).get("NetworkMode") or "")
    return ContainerInfo(
        id=str(attrs.get("Id", "")), name=str(attrs.get("Name", "")).lstrip("/"),
        hostname=str(config.get("Hostname") or ""), env=env,
        labels=dict(config.get("Labels") or {}), ports=ports, networks=networks,
        host_network=mode == "host")


def find_container(instance_id: str, containers: Iterable[ContainerInfo]) -> ContainerInfo | None:
    """The running container an announce ID names: its hostname, or a prefix of its ID.

    An ID prefix shorter than 12 characters, or a name or prefix that several
    containers share, names nobody: a guess could route traffic to the wrong one.
    """
    found = claimants(instance_id, containers)
    return found[0] if len(found) == 1 else None


def claimants(instance_id: str, containers: Iterable[ContainerInfo]) -> list[ContainerInfo]:
    """Every running container an announce ID could name (by hostname, else ID prefix)."""
    wanted = instance_id.lower()
    by_name, by_prefix = [], []
    for c in containers:
        if c.hostname.lower() == wanted:
            by_name.append(c)
        elif len(wanted) >= MIN_ID_PREFIX and c.id.startswith(wanted):
            by_prefix.append(c)
    return by_name or by_prefix


def duplicate_refusal(instance_id: str, found: Iterable[ContainerInfo]) -> Refusal:
    """Several running containers answer to one announce ID: route none, name them all."""
    names = ", ".join(sorted(f"{c.name} ({c.id[:12]})" for c in found))
    return Refusal(f"ID={instance_id} names several running containers here: {names}; "
                   f"routing none of them (give each its own hostname or ANNOUNCE_ID)",
                   "duplicate hostname")


def shared_hostnames(containers: Iterable[ContainerInfo]) -> set[str]:
    """Hostnames that several running containers share (compose `hostname:` + --scale,
    host networking)."""
    seen: dict[str, int] = {}
    for c in containers:
        seen[c.hostname.lower()] = seen.get(c.hostname.lower(), 0) + 1
    return {name for name, count in seen.items() if count > 1}


def own_identities(c: ContainerInfo) -> list[tuple[str, int]]:
    """(path, port) pairs the container declares about itself (env and labels)."""
    out = []
    for path_text, port_text in ((c.env.get("ANNOUNCE_PATH"), c.env.get("PORT")),
                                 (c.labels.get(LABEL_PATH), c.labels.get(LABEL_PORT))):
        if not path_text or not port_text:
            continue
        try:
            out.append((str(AnnouncePath.parse(path_text)), check_port("PORT", port_text)))
        except RecordError:
            continue
    return out


def check_claim(path: AnnouncePath, record: AnnounceRecord, c: ContainerInfo) -> Refusal | None:
    """A container may only claim the path and PORT it declares itself (no spoofing)."""
    mine = own_identities(c)
    if (str(path), record.port) in mine:
        return None
    if not mine:
        return Refusal(f"container={c.name} declares no ANNOUNCE_PATH/PORT environment or "
                       f"buoy.path/buoy.port labels; refusing path={path} port={record.port}",
                       "declares no ANNOUNCE_PATH/PORT or buoy.path/buoy.port")
    declared = ",".join(f"{p}:{n}" for p, n in mine)
    what = ("claims a path that is not its own" if all(p != str(path) for p, _ in mine)
            else "claims a port that is not its own")
    return Refusal(f"container={c.name} claims path={path} port={record.port} but declares "
                   f"{declared}; refusing (spoofing)", what)


def locate(record: AnnounceRecord, c: ContainerInfo, placement: Placement) -> tuple[str, int] | Refusal:
    """(IP, EXT_PORT) where the service can be reached from other hosts."""
    if c.host_network:  # it listens on the host's own interfaces
        return placement.host_ip, record.port
    if placement.internal_network is not None:
        ip = c.networks.get(placement.internal_network, "")
        if not ip:
            return Refusal(f"container={c.name} has no address on network="
                           f"{placement.internal_network}",
                           f"not on network {placement.internal_network}")
        return ip, record.port
    spec = f"{record.port}/tcp"
    usable = []
    for host_ip, host_port in c.ports.get(spec, ()):
        if not host_port.isdigit():
            continue
        # Docker lists an IPv4 and an IPv6 wildcard binding; the host IP is IPv4.
        if host_ip in WILDCARDS:
            usable.append((placement.host_ip, int(host_port)))
        elif _is_ipv4(host_ip):
            usable.append((host_ip, int(host_port)))
    if not usable:
        return Refusal(f"container={c.name} port={spec} is not published; no record",
                       f"port {record.port} not published")
    return usable[0]


def map_service(path: AnnouncePath, record: AnnounceRecord, c: ContainerInfo,
                placement: Placement) -> ServiceRecord | Refusal:
    """The service record for an announce of container `c`, or why there is none."""
    refusal = check_claim(path, record, c)
    if refusal is not None:
        return refusal
    where = locate(record, c, placement)
    if isinstance(where, Refusal):
        return where
    ip, ext_port = where
    try:
        return ServiceRecord.from_announce(record, ip=ip, ext_port=ext_port, host=placement.host_id)
    except RecordError as exc:
        return Refusal(f"container={c.name} record invalid: {exc}", "invalid record")


def check_key_agrees(path: AnnouncePath, instance_id: str, record: AnnounceRecord) -> str | None:
    """The announce key's path and ID must be what the record says; else the reason."""
    if record.id != instance_id:
        return f"record ID={record.id} differs from the key's ID={instance_id}"
    try:
        mine = record.path(path.scope)
    except RecordError as exc:
        return str(exc)
    if mine != path or (record.scope is not None and record.scope != path.scope):
        return f"record path={mine} differs from the key's path={path}"
    return None


def label_announce(c: ContainerInfo, shared: bool = False,
                   ) -> tuple[AnnouncePath, AnnounceRecord] | Refusal | None:
    """The announce register writes for an agentless container (buoy.* labels), if any.

    A container that runs its own agent (ANNOUNCE_PATH in its environment)
    announces itself; register then only uses the labels as its identity. Its ID
    is its hostname, or its 12-character short ID when another running container
    has the same hostname (`shared`), so both are routed, each under its own key.
    """
    if LABEL_PATH not in c.labels or "ANNOUNCE_PATH" in c.env:
        return None
    try:
        path = AnnouncePath.parse(c.labels.get(LABEL_PATH), field_name=LABEL_PATH)
        port = check_port(LABEL_PORT, c.labels.get(LABEL_PORT))
        kind = str(c.labels.get(LABEL_TYPE, "")).upper()
        if kind not in ("HTTP", "TCP"):
            raise RecordError(LABEL_TYPE, "must be HTTP or TCP", c.labels.get(LABEL_TYPE))
        check = c.labels.get(LABEL_CHECK)
        instance_id = (c.id[:MIN_ID_PREFIX].lower() if shared else
                       check_label("ID (container hostname)", c.hostname.lower()))
        record = AnnounceRecord.for_path(path, instance_id, port, kind,  # type: ignore[arg-type]
                                         check=check_check(check) if check else None,
                                         **https_labels(c.labels))
    except RecordError as exc:
        return Refusal(f"container={c.name} has invalid buoy labels: {exc}", "invalid buoy labels")
    return path, record


def https_labels(labels: Mapping[str, str]) -> dict[str, Any]:
    """buoy.https_redirect, buoy.hsts (max-age seconds) and buoy.acme → record fields."""
    out: dict[str, Any] = {}
    for label, name in ((LABEL_HTTPS_REDIRECT, "https_redirect"), (LABEL_ACME, "acme")):
        if label in labels:
            word = str(labels[label]).strip().lower()
            if word not in TRUE_WORDS + FALSE_WORDS:
                raise RecordError(label, "must be true or false", labels[label])
            out[name] = word in TRUE_WORDS
    if LABEL_HSTS in labels:
        text = str(labels[LABEL_HSTS]).strip()
        if not text.isdigit():
            raise RecordError(LABEL_HSTS, "must be a max-age in seconds", labels[LABEL_HSTS])
        out["hsts"] = int(text)  # the record checks the range
    return out


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
