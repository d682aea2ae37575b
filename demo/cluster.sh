#!/usr/bin/env bash
# The multi-host demo: three Docker hosts made on this machine as network namespaces on
# a bridge of the demo's own (a free 10.231.x.0/24), each with its own dockerd, buoy
# register (--host-ip its address, TTL 3 s) and buoy listen frontend, one 3-member etcd
# cluster and buoy dns. Shows cross-host routing, DNS, ambassadors, and a whole host
# killed and brought back, with the failed-request count. See docs/multihost.md.
#
#   bash demo/cluster.sh          # set up, run, tear everything down (Ctrl-C too)
#   KEEP=1 bash demo/cluster.sh   # leave it running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=${STATE:-$ROOT/.state/cluster}

bash .ci/setup >/dev/null
if [ -f "$STATE/manifest.json" ]; then   # leftovers of a run that could not clean up
  python3 demo/cluster.py --cleanup "$STATE/manifest.json"
fi
rm -rf "$STATE"; mkdir -p "$STATE"

cleanup() {
  trap '' INT TERM
  # demo/cluster.py cleans up itself; this catches what a killed one could not.
  if [ -f "$STATE/manifest.json" ]; then python3 demo/cluster.py --cleanup "$STATE/manifest.json"; fi
}
trap cleanup EXIT

# In the background so that a signal to this script is handled at once: Ctrl-C or a
# SIGTERM is passed on to the demo as SIGTERM (its PID only), which then cleans up.
python3 demo/cluster.py --state "$STATE" ${KEEP:+--keep} &
DEMO=$!
trap 'kill -TERM "$DEMO" 2>/dev/null || true; wait "$DEMO" || true; exit 130' INT TERM
wait "$DEMO"
