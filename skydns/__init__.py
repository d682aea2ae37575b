"""SkyDNS/CoreDNS records and `buoy dns` (to be built)."""
