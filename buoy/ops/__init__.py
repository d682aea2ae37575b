"""Running the suite: `buoy up`, the supervisor, etcd roles, health and metrics, `buoy ls`.

Built on `buoy.etcd`; agents import from here (health), never the other way round.
"""
