"""The etcd contract: records, keys, connection settings, store, paging, lease, watch.

Modules here import nothing else of buoy: agents and operations build on them.
"""
