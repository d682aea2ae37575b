"""`buoy announce`: keeps a container's TTL'd record under /announce alive."""
