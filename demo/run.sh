#!/usr/bin/env bash
# The main job: `buoy up` (register, listen + HAProxy, dns under supervisord) and a demo
# in real containers built from images/: two web instances and a TCP db, each running
# buoy announce (and, in the web containers, a buoy listen ambassador) under supervisord.
# Everything stays on 127.0.0.1 and inside the demo's own Docker network; everything it
# starts is stopped again on exit (processes by PID, containers and network by label).
#
#   bash demo/run.sh            # set up, build the images, run the demo, tear down
#   KEEP=1 bash demo/run.sh     # leave the stack running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash .ci/setup >/dev/null
DOCKER=/usr/bin/docker
STATE=$ROOT/.state/demo
rm -rf "$STATE"; mkdir -p "$STATE"
HTTP_PORT=${HTTP_PORT:-8080}
HTTPS_PORT=${HTTPS_PORT:-8443}
DNS_PORT=${DNS_PORT:-5354}
METRICS_PORT=${METRICS_PORT:-9100}  # register, listen (+1: its status page), dns (+2)
ETCD_PORT=${ETCD_PORT:-23790}
NET=buoy-demo
LABEL=buoy.demo=1
PIDS=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  say "stopping the demo"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ids=$($DOCKER ps -aq --filter "label=$LABEL")
  if [ -n "$ids" ]; then $DOCKER rm -f $ids >/dev/null || true; fi
  $DOCKER network rm "$NET" >/dev/null 2>&1 || true
}
trap cleanup EXIT
wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out waiting for $what"; exit 1; fi
    sleep 0.2
  done
}
cleanup >/dev/null 2>&1   # leftovers of an interrupted run

say "building the images (images/build.sh: offline, a debootstrap base the first time)"
bash images/build.sh 2>&1 | grep -E '^build: (done|base-os)' || true
printf 'FROM buoy/base\nCOPY etcd /usr/local/bin/etcd\nENTRYPOINT ["/usr/local/bin/etcd"]\n' > "$STATE/Dockerfile"
cp /usr/bin/etcd "$STATE/etcd"
$DOCKER build -q -t buoy-demo-etcd "$STATE" >/dev/null
$DOCKER network create --label "$LABEL" "$NET" >/dev/null

say "etcd in the demo network (published on 127.0.0.1:$ETCD_PORT)"
$DOCKER run -d --label "$LABEL" --name buoy-demo-etcd --network "$NET" --network-alias etcd \
  -p "127.0.0.1:$ETCD_PORT:2379" buoy-demo-etcd --name demo --data-dir /tmp/etcd \
  --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://etcd:2379 >/dev/null
wait_until 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

say "buoy up: register (container IPs on $NET), listen (HAProxy on 127.0.0.1:$HTTP_PORT), dns (127.0.0.1:$DNS_PORT)"
buoy up --etcd "http://127.0.0.1:$ETCD_PORT" --network "$NET" --http-port "$HTTP_PORT" \
  --https-port "$HTTPS_PORT" \
  --dns-port "$DNS_PORT" --metrics-port "$METRICS_PORT" \
  --listen-path /services/internal/app1/dev --extra-zone ghost.example. \
  --state-dir "$STATE/up" >"$STATE/up.log" 2>&1 &
PIDS+=($!)
stack_up() { grep '^buoy up:' "$STATE/up.log" | tail -1 | grep -q 'dns RUNNING | listen RUNNING | register RUNNING'; }
wait_until 60 "buoy up" stack_up
grep '^buoy up:' "$STATE/up.log" | tail -1
echo "listen's status page: http://127.0.0.1:$((METRICS_PORT + 1))/ (JSON: /status.json)"
export BUOY_ETCD_ENDPOINTS=http://127.0.0.1:$ETCD_PORT BUOY_LOG_LEVEL=warning

say "two web instances and a TCP db from buoy/base (announce under supervisord in each)"
run_app() {  # run_app NAME APP ENV...
  local name=$1 app=$2; shift 2
  $DOCKER run -d --label "$LABEL" --name "buoy-demo-$name" --hostname "$name" --network "$NET" \
    --stop-timeout 15 -e BUOY_ETCD_ENDPOINTS=http://etcd:2379 -e ANNOUNCE_DRAIN=2 "$@" \
    -v "$ROOT/demo/apps:/apps:ro" buoy/base python3 "/apps/$app" >/dev/null
}
for i in 1 2; do
  run_app "web$i" web.py -e ANNOUNCE_PATH=/internal/app1/dev/web/ghost.example -e PORT=8000 -e TYPE=HTTP \
    -e LISTEN_PATH=/services/internal/app1/dev/db -e BUOY_HTTP_BIND=127.0.0.1:8081
done
run_app db1 db.py -e ANNOUNCE_PATH=/internal/app1/dev/db -e PORT=5432 -e TYPE=TCP

routed() { curl -fsS -H 'Host: ghost.example' "http://127.0.0.1:$HTTP_PORT/" | grep -q "hello from web$1"; }
wait_until 60 "web1 routed" routed 1
wait_until 60 "web2 routed" routed 2

say "buoy ls"
buoy ls

say "HTTP through HAProxy by Host header (curl -H 'Host: ghost.example' 127.0.0.1:$HTTP_PORT)"
for _ in 1 2 3 4; do curl -fsS -H 'Host: ghost.example' "http://127.0.0.1:$HTTP_PORT/"; done

say "pinning one instance (Host: web2.ghost.example)"
curl -fsS -H 'Host: web2.ghost.example' "http://127.0.0.1:$HTTP_PORT/"

say "HTTPS: a certificate for ghost.example from a demo CA, put into etcd at /certs/ghost.example"
TLS=$STATE/tls; mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=buoy demo CA" \
  -keyout "$TLS/ca.key" -out "$TLS/ca.pem" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=ghost.example \
  -keyout "$TLS/ghost.key" -out "$TLS/ghost.csr" 2>/dev/null
openssl x509 -req -in "$TLS/ghost.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial -days 2 \
  -extfile <(printf 'subjectAltName=DNS:ghost.example\n') -out "$TLS/ghost.crt" 2>/dev/null
cat "$TLS/ghost.crt" "$TLS/ghost.key" | ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$ETCD_PORT" \
  put /certs/ghost.example >/dev/null
https_get() { curl -fsS --cacert "$TLS/ca.pem" --resolve "ghost.example:$HTTPS_PORT:127.0.0.1" \
  "https://ghost.example:$HTTPS_PORT/"; }
wait_until 30 "HTTPS for ghost.example" https_get
echo "curl --cacert $TLS/ca.pem --resolve ghost.example:$HTTPS_PORT:127.0.0.1 https://ghost.example:$HTTPS_PORT/"
https_get

say "the db through the ambassador port, inside web1: python3 -> 127.0.0.1:5432"
ambassador() { $DOCKER exec buoy-demo-web1 python3 /apps/db_client.py; }
wait_until 60 "the ambassador in web1" ambassador
echo "web1 sent 'ping' to 127.0.0.1:5432 and got back: $(ambassador)"

say "DNS: dig @127.0.0.1 -p $DNS_PORT web.dev.app1.internal.buoy.internal SRV"
dig +norec +noall +answer +additional @127.0.0.1 -p "$DNS_PORT" web.dev.app1.internal.buoy.internal SRV
dig +norec +noall +answer @127.0.0.1 -p "$DNS_PORT" db.dev.app1.internal.buoy.internal A
dig +norec +noall +answer @127.0.0.1 -p "$DNS_PORT" ghost.example A

say "docker stop buoy-demo-web1 under load: announce withdraws and drains first"
( end=$(( $(date +%s) + 6 )); ok=0; bad=0
  while [ "$(date +%s)" -lt "$end" ]; do
    if curl -fsS -m 2 -H 'Host: ghost.example' "http://127.0.0.1:$HTTP_PORT/" >/dev/null 2>&1; then ok=$((ok+1)); else bad=$((bad+1)); fi
  done; echo "requests during the stop: $ok ok, $bad failed" ) &
LOAD=$!
sleep 0.5
$DOCKER stop buoy-demo-web1 >/dev/null
wait "$LOAD"
for _ in 1 2; do curl -fsS -H 'Host: ghost.example' "http://127.0.0.1:$HTTP_PORT/"; done

if [ -n "${KEEP:-}" ]; then
  say "stack running (logs in $STATE); Ctrl-C to stop"
  wait
fi
say "demo OK"
