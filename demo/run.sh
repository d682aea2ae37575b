#!/usr/bin/env bash
# The main job: `buoy up` (etcd, register, listen + HAProxy, dns under supervisord) and a demo
# that shows routing working. Everything listens on 127.0.0.1; everything it starts is
# stopped again on exit (processes by PID, containers by label).
#
#   bash demo/run.sh            # set up, run the demo, tear down
#   KEEP=1 bash demo/run.sh     # leave the stack running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash .ci/setup >/dev/null
DOCKER=/usr/bin/docker
STATE=$ROOT/.state/demo
rm -rf "$STATE"; mkdir -p "$STATE"
HTTP_PORT=${HTTP_PORT:-8080}
DNS_PORT=${DNS_PORT:-5354}
ETCD_PORT=${ETCD_PORT:-23790}
IMAGE=buoy-demo-busybox:latest
LABEL=buoy.demo=1
PIDS=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  say "stopping the demo"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ids=$($DOCKER ps -aq --filter "label=$LABEL")
  [ -n "$ids" ] && $DOCKER rm -f $ids >/dev/null || true
}
trap cleanup EXIT
wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out waiting for $what"; exit 1; fi
    sleep 0.2
  done
}

say "building the busybox demo image (docker import, no registry needed)"
if ! $DOCKER image inspect "$IMAGE" >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/www" "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  for app in sh httpd nc cat hostname mkdir sleep echo; do ln -s busybox "$rootfs/bin/$app"; done
  tar -C "$rootfs" -c . | $DOCKER import - "$IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

say "buoy up: etcd on 127.0.0.1:$ETCD_PORT, register, listen (HAProxy on 127.0.0.1:$HTTP_PORT), dns (127.0.0.1:$DNS_PORT)"
buoy up --http-port "$HTTP_PORT" --dns-port "$DNS_PORT" --etcd-port "$ETCD_PORT" \
  --host-ip 127.0.0.1 --listen-path /services/internal/app1/dev --extra-zone ghost.example. \
  --state-dir "$STATE/up" >"$STATE/up.log" 2>&1 &
PIDS+=($!)
stack_up() { grep '^buoy up:' "$STATE/up.log" | tail -1 | grep -q 'dns RUNNING | etcd RUNNING | listen RUNNING | register RUNNING'; }
wait_until 60 "buoy up" stack_up
grep '^buoy up:' "$STATE/up.log" | tail -1
export BUOY_ETCD_ENDPOINTS=http://127.0.0.1:$ETCD_PORT BUOY_LOG_LEVEL=warning

say "starting two web instances and a TCP db (labels only: register announces them)"
for i in 1 2; do
  $DOCKER run -d --label "$LABEL" --hostname "web$i" --name "buoy-demo-web$i" \
    --label buoy.path=/internal/app1/dev/web/ghost.example --label buoy.port=80 --label buoy.type=HTTP \
    -p 127.0.0.1::80 "$IMAGE" sh -c 'echo "hello from $(hostname)" > /www/index.html; exec httpd -f -p 80 -h /www' >/dev/null
done
$DOCKER run -d --label "$LABEL" --hostname db1 --name buoy-demo-db1 \
  --label buoy.path=/internal/app1/dev/db --label buoy.port=5432 --label buoy.type=TCP \
  -p 127.0.0.1::5432 "$IMAGE" nc -ll -p 5432 -e /bin/cat >/dev/null

routed() { curl -fsS -H 'Host: ghost.example' "http://127.0.0.1:$HTTP_PORT/" | grep -q "hello from web$1"; }
wait_until 30 "web1 routed" routed 1
wait_until 30 "web2 routed" routed 2

say "buoy ls"
buoy ls

say "HTTP through HAProxy by Host header (curl -H 'Host: ghost.example' 127.0.0.1:$HTTP_PORT)"
for _ in 1 2 3 4; do curl -fsS -H 'Host: ghost.example' "http://127.0.0.1:$HTTP_PORT/"; done

say "pinning one instance (Host: web2.ghost.example)"
curl -fsS -H 'Host: web2.ghost.example' "http://127.0.0.1:$HTTP_PORT/"

say "TCP through the ambassador port 127.0.0.1:5432 (an echo server in the db container)"
wait_until 30 "ambassador" bash -c "echo ping | timeout 2 busybox nc 127.0.0.1 5432 | grep -q ping"
echo "sent 'ping', got back: $(echo ping | timeout 2 busybox nc 127.0.0.1 5432)"

say "DNS: dig @127.0.0.1 -p $DNS_PORT web.dev.app1.internal.buoy.internal SRV"
dig +norec +noall +answer +additional @127.0.0.1 -p "$DNS_PORT" web.dev.app1.internal.buoy.internal SRV
dig +norec +noall +answer @127.0.0.1 -p "$DNS_PORT" ghost.example A

say "scale down: docker kill buoy-demo-web1 (register removes it at once)"
$DOCKER kill buoy-demo-web1 >/dev/null
only_web2() { for _ in 1 2 3 4; do curl -fsS -H 'Host: ghost.example' "http://127.0.0.1:$HTTP_PORT/" | grep -q web2 || return 1; done; }
wait_until 10 "web1 removed" only_web2
for _ in 1 2; do curl -fsS -H 'Host: ghost.example' "http://127.0.0.1:$HTTP_PORT/"; done

if [ -n "${KEEP:-}" ]; then
  say "stack running (logs in $STATE); Ctrl-C to stop"
  wait
fi
say "demo OK"
