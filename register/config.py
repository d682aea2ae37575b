"""register's settings as one frozen, validated object, and the host defaults."""

from __future__ import annotations

import fcntl
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from buoy.etcd.dns_records import DEFAULT_ZONE, normalize_zone
from buoy.etcd.records import HOST_ID_RE, RecordError, check_ip
from buoy.register.mapping import Placement

SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class RegisterConfig:
    host_id: str
    host_ip: str
    ttl: int = 15
    resync: float = 30.0
    internal: bool = False
    network: str | None = None
    zone: str = DEFAULT_ZONE
    docker_host: str = "unix:///var/run/docker.sock"
    deregister_on_exit: bool = False

    def __post_init__(self) -> None:
        if not HOST_ID_RE.match(self.host_id):
            raise RecordError("BUOY_HOST_ID", "must match [A-Za-z0-9][A-Za-z0-9._-]{0,252}",
                              self.host_id)
        object.__setattr__(self, "host_ip", check_ip("BUOY_HOST_IP", self.host_ip))
        object.__setattr__(self, "zone", normalize_zone(self.zone))
        if self.internal and not self.network:
            raise RecordError("BUOY_NETWORK", "is required with --internal", self.network)
        if self.network is not None and not self.internal:
            raise RecordError("BUOY_NETWORK", "is only used with --internal", self.network)
        if not self.docker_host.startswith(("unix://", "tcp://", "http://", "https://")):
            raise RecordError("DOCKER_HOST", "must be unix://, tcp://, http:// or https://",
                              self.docker_host)

    @property
    def placement(self) -> Placement:
        return Placement(self.host_id, self.host_ip, self.network if self.internal else None)


def default_route_interface(route_table: str) -> str | None:
    """The interface of the IPv4 default route in /proc/net/route text (pure)."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        # Destination 00000000 with the RTF_GATEWAY flag (0x2) is the default route.
        if len(fields) > 3 and fields[1] == "00000000" and int(fields[3], 16) & 0x2:
            return fields[0]
    return None


def interface_ipv4(name: str) -> str | None:
    """The IPv4 address of interface `name` (SIOCGIFADDR), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR,
                                 struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def default_host_ip() -> str | None:
    """The IPv4 address of the interface that holds the default route."""
    try:
        table = Path("/proc/net/route").read_text()
    except OSError:
        return None
    name = default_route_interface(table)
    return interface_ipv4(name) if name else None
