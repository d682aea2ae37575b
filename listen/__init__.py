"""`buoy listen`: HAProxy that follows /services in etcd (to be built)."""
