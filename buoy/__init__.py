"""buoy: etcd-backed service discovery for Docker.

`buoy` is the only top-level name the package installs:

- `buoy.etcd`: the etcd contract every agent shares: record types (`records`), the key
  layout (`keys`), connection settings (`settings`), the store (`store`, the only module
  that imports the gRPC etcd client; announce uses `gateway`, etcd's JSON gateway over
  the standard library), paged reads (`paging`), the lease keeper (`lease`, `keepalive`),
  the watch loop (`watch`) and the retry policy (`retry`).
- `buoy.ops`: running the suite: `up`, `supervise`, etcd roles, health and metrics
  serving, `ls`.
- the agents: `buoy.announce`, `buoy.register`, `buoy.listen`, `buoy.skydns`.
- the command line: `buoy.cli` (and `cli_common`, what every agent's command shares).

Imports flow one way: agents -> ops -> etcd; `buoy.etcd` imports nothing else of buoy.
"""

__version__ = "0.1.0"
