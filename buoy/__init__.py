"""buoy: etcd-backed service discovery for Docker.

The shared core every agent uses lives here: record types (`records`), the key
layout (`keys`), the etcd store (`store`, the only module that imports the gRPC etcd
client; announce uses `etcd_gateway`, etcd's JSON gateway over the standard library),
the lease keeper (`lease`), the watch loop (`watch`) and the retry policy (`retry`).
The `buoy` command line is `buoy.cli`.
"""

__version__ = "0.1.0"
