#!/usr/bin/env bash
# Starts each installed peer on loopback with the flag sets documented in
# e2e/tools/README.md, checks that it answers, and stops it again.
#
#   e2e/tools/smoke.sh [peer...]    peers: prometheus minio etcd kube-apiserver helm thanos (default: all)
#
# Reads binary paths from ${STRATA_TOOLS_DIR:-$HOME/.cache/strata/tools}/env.sh
# (written by install.sh). Needs curl and openssl. Exits non-zero on the first failure.
set -euo pipefail

TOOLS_DIR="${STRATA_TOOLS_DIR:-$HOME/.cache/strata/tools}"
# shellcheck disable=SC1091
source "$TOOLS_DIR/env.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/strata-smoke.XXXXXX")"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A free loopback TCP port (asks the kernel for an ephemeral one).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for <seconds> <logfile> <curl args...>: polls until curl succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)) log=$2; shift 2
  until curl -fsS -o /dev/null --max-time 5 "$@" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "timed out waiting for: curl $*; last log lines:" >&2; tail -n 40 "$log" >&2; return 1
    fi
    sleep 0.5
  done
}

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

smoke_prometheus() {
  local port dir="$WORK/prometheus" pid out
  port=$(free_port); mkdir -p "$dir"
  cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ['127.0.0.1:$port']
EOF
  "$STRATA_PROMTOOL" check config "$dir/prometheus.yml" >/dev/null
  "$STRATA_PROMETHEUS" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$dir/log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_for 60 "$dir/log" "http://127.0.0.1:$port/-/ready"
  local deadline=$((SECONDS + 30))
  until out=$(curl -fsS "http://127.0.0.1:$port/api/v1/query?query=up") && [[ "$out" == *'"value"'* ]]; do
    ((SECONDS < deadline)) || { echo "no 'up' sample: $out" >&2; return 1; }
    sleep 0.5
  done
  echo "prometheus ok: $out"
  stop "$pid"
}

smoke_minio() {
  local port console dir="$WORK/minio" pid
  port=$(free_port); console=$(free_port); mkdir -p "$dir/data"
  MINIO_ROOT_USER=strata-e2e MINIO_ROOT_PASSWORD=strata-e2e-secret MINIO_BROWSER=off MINIO_UPDATE=off \
    "$STRATA_MINIO" server --quiet --address "127.0.0.1:$port" --console-address "127.0.0.1:$console" \
    "$dir/data" >"$dir/log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_for 60 "$dir/log" "http://127.0.0.1:$port/minio/health/live"
  wait_for 60 "$dir/log" "http://127.0.0.1:$port/minio/health/ready"
  # An anonymous S3 call must be answered by the S3 layer (403 AccessDenied XML).
  local code
  code=$(curl -s -o "$dir/anon" -w '%{http_code}' "http://127.0.0.1:$port/")
  [[ "$code" == 403 ]] && grep -q AccessDenied "$dir/anon" || { echo "unexpected anonymous S3 reply $code" >&2; return 1; }
  echo "minio ok: /minio/health/live and /ready 200, anonymous ListBuckets 403"
  stop "$pid"
}

# Starts etcd; sets ETCD_URL and ETCD_PID.
start_etcd() {
  local client peer dir="$WORK/etcd"
  client=$(free_port); peer=$(free_port); mkdir -p "$dir"
  ETCD_URL="http://127.0.0.1:$client"
  "$STRATA_ETCD" --name=e2e --data-dir="$dir/data" \
    --listen-client-urls="$ETCD_URL" --advertise-client-urls="$ETCD_URL" \
    --listen-peer-urls="http://127.0.0.1:$peer" --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
    --initial-cluster="e2e=http://127.0.0.1:$peer" \
    --unsafe-no-fsync --log-level=warn >"$dir/log" 2>&1 &
  ETCD_PID=$!; PIDS+=("$ETCD_PID")
  wait_for 60 "$dir/log" "$ETCD_URL/health"
}

smoke_etcd() {
  start_etcd
  echo "etcd ok: $(curl -fsS "$ETCD_URL/health")"
  stop "$ETCD_PID"
}

smoke_kube-apiserver() {
  local port dir="$WORK/apiserver" pid token=strata-e2e-admin-token
  start_etcd
  port=$(free_port); mkdir -p "$dir"
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  echo "$token,strata-e2e-admin,strata-e2e-admin-uid,\"system:masters\"" >"$dir/tokens.csv"
  "$STRATA_KUBE_APISERVER" \
    --etcd-servers="$ETCD_URL" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" \
    --cert-dir="$dir/certs" \
    --token-auth-file="$dir/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/sa.key" \
    --service-account-signing-key-file="$dir/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --endpoint-reconciler-type=none \
    >"$dir/log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_for 120 "$dir/log" -k -H "Authorization: Bearer $token" "https://127.0.0.1:$port/readyz"
  echo "kube-apiserver ok: /readyz $(curl -fsS -k -H "Authorization: Bearer $token" "https://127.0.0.1:$port/readyz"); $(curl -fsS -k -H "Authorization: Bearer $token" "https://127.0.0.1:$port/version" | tr -d ' \n')"
  # Unauthenticated requests are anonymous and RBAC-denied beyond the health endpoints.
  local code
  code=$(curl -s -k -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/api/v1/namespaces")
  [[ "$code" == 401 || "$code" == 403 ]] || { echo "anonymous list namespaces returned $code" >&2; return 1; }
  stop "$pid"
  stop "$ETCD_PID"
  if grep -q 'may not be in the loopback range' "$dir/log"; then echo "kube-apiserver: endpoint reconciler still active" >&2; return 1; fi
}

smoke_helm() {
  local out
  out=$(HOME="$WORK" "$STRATA_HELM" version)
  HOME="$WORK" "$STRATA_HELM" create "$WORK/chart" >/dev/null
  HOME="$WORK" "$STRATA_HELM" template smoke "$WORK/chart" >/dev/null
  echo "helm ok: $out; create + template work"
}

# Prometheus (external label replica=a) -> thanos sidecar -> thanos query; `up` read through Thanos.
smoke_thanos() {
  local pport sgrpc shttp qgrpc qhttp dir="$WORK/thanos" ppid spid qpid out
  pport=$(free_port); sgrpc=$(free_port); shttp=$(free_port); qgrpc=$(free_port); qhttp=$(free_port)
  mkdir -p "$dir"
  printf '%s\n' 'global:' '  scrape_interval: 1s' '  external_labels:' '    replica: a' \
    'scrape_configs:' '  - job_name: self' '    static_configs:' \
    "      - targets: ['127.0.0.1:$pport']" >"$dir/prometheus.yml"
  "$STRATA_PROMETHEUS" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="127.0.0.1:$pport" --log.level=warn >"$dir/prometheus.log" 2>&1 &
  ppid=$!; PIDS+=("$ppid")
  wait_for 60 "$dir/prometheus.log" "http://127.0.0.1:$pport/-/ready"
  "$STRATA_THANOS" sidecar --prometheus.url="http://127.0.0.1:$pport" --tsdb.path="$dir/data" \
    --grpc-address="127.0.0.1:$sgrpc" --http-address="127.0.0.1:$shttp" >"$dir/sidecar.log" 2>&1 &
  spid=$!; PIDS+=("$spid")
  wait_for 60 "$dir/sidecar.log" "http://127.0.0.1:$shttp/-/ready"
  "$STRATA_THANOS" query --grpc-address="127.0.0.1:$qgrpc" --http-address="127.0.0.1:$qhttp" \
    --endpoint.sd-config="$(printf 'endpoints:\n  - address: 127.0.0.1:%s\n' "$sgrpc")" \
    --query.replica-label=replica >"$dir/query.log" 2>&1 &
  qpid=$!; PIDS+=("$qpid")
  wait_for 60 "$dir/query.log" "http://127.0.0.1:$qhttp/-/ready"
  # dedup=false keeps the sidecar's external label, which proves the answer came through it.
  local deadline=$((SECONDS + 60))
  until out=$(curl -fsS "http://127.0.0.1:$qhttp/api/v1/query?query=up&dedup=false") &&
        [[ "$out" == *'"replica":"a"'* ]]; do
    ((SECONDS < deadline)) || { echo "no 'up' through thanos query: $out" >&2; tail -n 20 "$dir/query.log" >&2; return 1; }
    sleep 0.5
  done
  echo "thanos ok: $("$STRATA_THANOS" --version 2>&1 | head -n1); query via sidecar: $out"
  stop "$qpid"; stop "$spid"; stop "$ppid"
}

peers=("$@")
((${#peers[@]})) || peers=(prometheus minio etcd kube-apiserver helm thanos)
for p in "${peers[@]}"; do "smoke_$p"; done
echo "all smoke checks passed: ${peers[*]}"
