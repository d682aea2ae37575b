"""`buoy register`: per-host registration from the Docker API (to be built)."""
