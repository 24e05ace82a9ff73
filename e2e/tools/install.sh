#!/usr/bin/env bash
# Builds the real test peers for Strata's e2e tests from pinned Go modules.
#
#   e2e/tools/install.sh [-j N] [peer...]     peers: prometheus minio etcd kube-apiserver helm thanos
#                                             alertmanager prometheus-operator-crds kwok
#                                             (default: all of them)
#
# Binaries go to ${STRATA_TOOLS_DIR:-$HOME/.cache/strata/tools}/<name>-<version>/bin/,
# outside the repository. Each peer is built from the wrapper module in
# e2e/tools/<dir>/ (go.mod + checked-in go.sum, no Go sources) with
# CGO_ENABLED=0, -trimpath and -mod=readonly, using the default Go build and
# module caches. A peer whose binaries exist, run, and were built from the same
# recipe (go.mod, go.sum, flags) is skipped ("cached"). At the end
# ${STRATA_TOOLS_DIR}/env.sh is (re)written with absolute paths of every
# installed peer (STRATA_PROMETHEUS, STRATA_PROMTOOL, STRATA_MINIO, STRATA_ETCD,
# STRATA_KUBE_APISERVER, STRATA_KUBE_CONTROLLER_MANAGER, STRATA_KUBE_SCHEDULER,
# STRATA_HELM, STRATA_THANOS, STRATA_ALERTMANAGER, STRATA_PROMETHEUS_OPERATOR_CRDS,
# STRATA_KWOK; kwok's stage files lie beside it). P_FETCH files (prometheus-operator's CRD, kwok's
# stage files) are copied out of the checksum-verified module.
#
# Options / environment:
#   -j N, STRATA_TOOLS_JOBS=N   build up to N peers concurrently (default 1; on a
#                               2-core machine 1-2 is sensible)
#   STRATA_PROMETHEUS_ALL_SD=1  build Prometheus with every service-discovery
#                               plugin (default keeps static, file, http and
#                               kubernetes SD only; roughly halves compile time)
#   GO=/path/to/go              Go toolchain to use (default: go on PATH, else
#                               /usr/local/go/bin/go)
#
# See e2e/tools/README.md for the verified start flags of each peer, and
# e2e/tools/smoke.sh for an executable version of them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="${STRATA_TOOLS_DIR:-$HOME/.cache/strata/tools}"
JOBS="${STRATA_TOOLS_JOBS:-1}"
ALL_PEERS=(prometheus minio etcd kube-apiserver helm thanos alertmanager prometheus-operator-crds kwok)

if [[ -z "${GO:-}" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"; else GO=/usr/local/go/bin/go; fi
fi
[[ -x "$GO" ]] || { echo "install.sh: Go toolchain not found (set GO=...)" >&2; exit 1; }

export CGO_ENABLED=0
# -mod=readonly: build exactly what the checked-in go.mod/go.sum say.
export GOFLAGS="-mod=readonly -buildvcs=false"

# ---------------------------------------------------------------------------
# Pins. Module times (from the Go module proxy) double as reproducible build dates.

PROMETHEUS_VERSION=3.14.0              # Go module github.com/prometheus/prometheus v0.314.0
PROMETHEUS_DATE=20260817-13:38:44

MINIO_VERSION=2026-02-12T20-18-48Z     # github.com/minio/minio v0.0.0-20260212201848-7aac2a2c5b7c
MINIO_COMMIT=7aac2a2c5b7c

ETCD_VERSION=3.6.8                     # go.etcd.io/etcd/server/v3 v3.6.8 (what k8s v1.36.3 uses)

KUBE_VERSION=v1.36.3                   # k8s.io/kubernetes v1.36.3, staging modules v0.36.3
KUBE_DATE=2026-07-22T18:07:38Z

HELM_VERSION=v3.22.0                   # helm.sh/helm/v3 v3.22.0
HELM_K8S_MAJOR=1                       # from its k8s.io/client-go v0.37.0, as helm's Makefile does
HELM_K8S_MINOR=37

THANOS_VERSION=0.42.4                  # github.com/thanos-io/thanos v0.42.4 (v0.42.5: same code, needs Go 1.26.10)
THANOS_DATE=20260730-13:04:27

ALERTMANAGER_VERSION=0.35.0            # github.com/prometheus/alertmanager v0.35.0
ALERTMANAGER_DATE=20261109-07:41:41

PROMETHEUS_OPERATOR_VERSION=v0.85.0    # github.com/prometheus-operator/prometheus-operator v0.85.0 (CRD files only)

KWOK_VERSION=v0.8.0                    # sigs.k8s.io/kwok v0.8.0 (k8s.io/* v0.36.1)

# ---------------------------------------------------------------------------
# Per-peer recipes. peer_<name> sets:
#   P_DIR      install dir name (<name>-<version>)
#   P_MOD      wrapper module dir under e2e/tools/
#   P_BINS     binaries to produce (bin name = last element of the package path)
#   P_PKGS     packages to build, in the same order as P_BINS
#   P_TAGS     build tags
#   P_LDFLAGS  linker flags
#   P_VERSION  command (relative to bin/) whose output proves the binary runs
#   P_ENV      "VAR=bin" pairs for env.sh
#   P_PREPARE  optional function run with the build dir before building; it may
#              set P_BUILD_FLAGS (extra `go build` flags)

peer_prometheus() {
  local v=github.com/prometheus/common/version
  P_DIR="prometheus-${PROMETHEUS_VERSION}"
  P_MOD=prometheus
  P_BINS=(prometheus promtool)
  P_PKGS=(github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool)
  # No builtinassets: the web UI is not embedded (/ and /query answer 500), the
  # HTTP API is unaffected.
  if [[ "${STRATA_PROMETHEUS_ALL_SD:-0}" == 1 ]]; then
    P_TAGS="netgo"
  else
    P_TAGS="netgo,remove_all_sd,enable_kubernetes_sd"
  fi
  P_LDFLAGS="-s -w -X ${v}.Version=${PROMETHEUS_VERSION} -X ${v}.Revision=unknown -X ${v}.Branch=v${PROMETHEUS_VERSION} -X ${v}.BuildUser=strata-e2e -X ${v}.BuildDate=${PROMETHEUS_DATE}"
  P_VERSION=("prometheus --version" "promtool --version")
  P_ENV=(STRATA_PROMETHEUS=prometheus STRATA_PROMTOOL=promtool)
}

peer_minio() {
  local v=github.com/minio/minio/cmd
  P_DIR="minio-${MINIO_VERSION}"
  P_MOD=minio
  P_BINS=(minio)
  P_PKGS=(github.com/minio/minio)
  P_TAGS="kqueue"
  # Same variables as minio's buildscripts/gen-ldflags.go. Version is the commit time (RFC 3339).
  P_LDFLAGS="-s -w -X ${v}.Version=2026-02-12T20:18:48Z -X ${v}.CopyrightYear=2026 -X ${v}.ReleaseTag=DEVELOPMENT.${MINIO_VERSION} -X ${v}.CommitID=${MINIO_COMMIT} -X ${v}.ShortCommitID=${MINIO_COMMIT}"
  P_VERSION=("minio --version")
  P_ENV=(STRATA_MINIO=minio)
}

peer_etcd() {
  P_DIR="etcd-${ETCD_VERSION}"
  P_MOD=etcd
  P_BINS=(etcd)
  P_PKGS=(go.etcd.io/etcd/server/v3)
  P_TAGS=""
  P_LDFLAGS="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v${ETCD_VERSION}"
  P_VERSION=("etcd --version")
  P_ENV=(STRATA_ETCD=etcd)
}

peer_kube-apiserver() {
  local l="" p k val
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for k in gitVersion=${KUBE_VERSION} gitMajor=1 gitMinor=36 gitCommit=unknown gitTreeState=clean buildDate=${KUBE_DATE}; do
      l+=" -X ${p}.${k}"
    done
  done
  P_DIR="kube-apiserver-${KUBE_VERSION}"
  P_MOD=kubernetes
  # The control plane the operator e2e needs: the API server, plus the controller-manager
  # (StatefulSet/Deployment controllers, garbage collector) and the scheduler, so that
  # workloads get Pods that kwok then runs on fake nodes.
  P_BINS=(kube-apiserver kube-controller-manager kube-scheduler)
  P_PKGS=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
  P_TAGS="selinux,notest,grpcnotrace"   # as kubernetes' hack/lib/golang.sh for release builds
  P_LDFLAGS="-s -w${l}"
  P_VERSION=("kube-apiserver --version" "kube-controller-manager --version" "kube-scheduler --version")
  P_ENV=(STRATA_KUBE_APISERVER=kube-apiserver STRATA_KUBE_CONTROLLER_MANAGER=kube-controller-manager STRATA_KUBE_SCHEDULER=kube-scheduler)
}

peer_helm() {
  local v=helm.sh/helm/v3
  P_DIR="helm-${HELM_VERSION}"
  P_MOD=helm
  P_BINS=(helm)
  P_PKGS=(helm.sh/helm/v3/cmd/helm)
  P_TAGS=""
  P_LDFLAGS="-s -w -X ${v}/internal/version.version=${HELM_VERSION} -X ${v}/internal/version.gitTreeState=clean"
  for k in pkg/lint/rules pkg/chartutil; do
    P_LDFLAGS+=" -X ${v}/${k}.k8sVersionMajor=${HELM_K8S_MAJOR} -X ${v}/${k}.k8sVersionMinor=${HELM_K8S_MINOR}"
  done
  P_VERSION=("helm version")
  P_ENV=(STRATA_HELM=helm)
}

peer_thanos() {
  local v=github.com/prometheus/common/version
  P_DIR="thanos-${THANOS_VERSION}"
  P_MOD=thanos
  P_BINS=(thanos)
  P_PKGS=(github.com/thanos-io/thanos/cmd/thanos)
  # Upstream's release tags (.promu.yml): slicelabels selects the labels
  # implementation Thanos is written against.
  P_TAGS="netgo,slicelabels"
  P_LDFLAGS="-s -w -X ${v}.Version=${THANOS_VERSION} -X ${v}.Revision=unknown -X ${v}.Branch=v${THANOS_VERSION} -X ${v}.BuildUser=strata-e2e -X ${v}.BuildDate=${THANOS_DATE}"
  P_VERSION=("thanos --version")
  P_ENV=(STRATA_THANOS=thanos)
}

peer_alertmanager() {
  local v=github.com/prometheus/common/version
  P_DIR="alertmanager-${ALERTMANAGER_VERSION}"
  P_MOD=alertmanager
  P_BINS=(alertmanager)
  P_PKGS=(github.com/prometheus/alertmanager/cmd/alertmanager)
  P_TAGS="netgo"
  P_LDFLAGS="-s -w -X ${v}.Version=${ALERTMANAGER_VERSION} -X ${v}.Revision=unknown -X ${v}.Branch=v${ALERTMANAGER_VERSION} -X ${v}.BuildUser=strata-e2e -X ${v}.BuildDate=${ALERTMANAGER_DATE}"
  P_VERSION=("alertmanager --version")
  P_ENV=(STRATA_ALERTMANAGER=alertmanager)
  P_PREPARE=prepare_alertmanager
}

# prometheus-operator's PrometheusRule CRD, as a file (the operator e2e installs it when it
# tests PrometheusRule support). P_FETCH: "module:path-in-module" pairs copied to bin/.
peer_prometheus-operator-crds() {
  P_DIR="prometheus-operator-crds-${PROMETHEUS_OPERATOR_VERSION}"
  P_MOD=prometheus-operator-crds
  P_BINS=(monitoring.coreos.com_prometheusrules.yaml)
  P_PKGS=()
  P_FETCH=("github.com/prometheus-operator/prometheus-operator:example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml")
  P_TAGS=""
  P_LDFLAGS=""
  P_VERSION=()
  P_ENV=(STRATA_PROMETHEUS_OPERATOR_CRDS=monitoring.coreos.com_prometheusrules.yaml)
}

# kwok: fake nodes and the pods scheduled on them, driven by Stage objects. The binary is
# built; the "fast" stages (node Ready at once, pods Running/Ready at once, deleted pods
# removed) are copied from the same module to bin/ and loaded by the harness with --config.
peer_kwok() {
  local s="kustomize/stage"
  P_DIR="kwok-${KWOK_VERSION}"
  P_MOD=kwok
  P_BINS=(kwok)
  P_PKGS=(sigs.k8s.io/kwok/cmd/kwok)
  P_FETCH=("sigs.k8s.io/kwok:$s/node/fast/node-initialize.yaml" "sigs.k8s.io/kwok:$s/pod/fast/pod-ready.yaml"
           "sigs.k8s.io/kwok:$s/pod/fast/pod-complete.yaml" "sigs.k8s.io/kwok:$s/pod/fast/pod-delete.yaml")
  P_TAGS=""
  P_LDFLAGS="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}"
  P_VERSION=("kwok --version")
  P_ENV=(STRATA_KWOK=kwok)
}

# Copies the P_FETCH files of the current peer into $1/bin (module verified against the wrapper's go.sum).
fetch_files() {
  local dest="$1" pair mod file dir
  for pair in "${P_FETCH[@]}"; do
    mod="${pair%%:*}"; file="${pair#*:}"
    dir="$(cd "$HERE/$P_MOD" && "$GO" mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -n "$dir" && -f "$dir/$file" ]] || { echo "$mod: $file not found in the module cache" >&2; return 1; }
    cp "$dir/$file" "$dest/bin/$(basename "$file")"
    chmod 644 "$dest/bin/$(basename "$file")"
  done
}

# Alertmanager's ui package embeds ui/app/dist (the built web UI), which is not in
# the Go module zip, so the module does not compile as downloaded. Build from a
# copy of the (checksum-verified) module with an empty placeholder UI, through a
# temporary go.mod that replaces the module by that copy. The API is unaffected.
prepare_alertmanager() {
  local work="$1/src" src
  src="$(cd "$HERE/$P_MOD" && "$GO" mod download -json github.com/prometheus/alertmanager \
         | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$src" && -d "$src" ]] || { echo "alertmanager module not found in the module cache" >&2; return 1; }
  mkdir -p "$work"
  cp -r "$src" "$work/alertmanager"
  chmod -R u+w "$work/alertmanager"
  mkdir -p "$work/alertmanager/ui/app/dist/elm" "$work/alertmanager/ui/app/dist/mantine"
  for d in elm mantine; do
    echo '<!doctype html><title>Alertmanager</title><p>web UI not built (Strata e2e peer)</p>' \
      >"$work/alertmanager/ui/app/dist/$d/index.html"
  done
  cp "$HERE/$P_MOD/go.mod" "$HERE/$P_MOD/go.sum" "$work/"
  (cd "$HERE/$P_MOD" && "$GO" mod edit -modfile="$work/go.mod" -replace "github.com/prometheus/alertmanager=$work/alertmanager")
  P_BUILD_FLAGS=(-modfile="$work/go.mod")
}

# ---------------------------------------------------------------------------

log() { printf '[%s] %s\n' "$1" "$2"; }

recipe_stamp() {
  { cat "$HERE/$P_MOD/go.mod" "$HERE/$P_MOD/go.sum"
    printf '%s\n' "${P_PKGS[@]}" "${P_FETCH[@]}" "tags=$P_TAGS" "ldflags=$P_LDFLAGS" "cgo=$CGO_ENABLED"
  } | sha256sum | cut -d' ' -f1
}

# True if every binary of the peer exists, runs, and matches the recipe stamp.
is_installed() {
  local dir="$TOOLS_DIR/$P_DIR" b
  [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$(recipe_stamp)" ]] || return 1
  local pair
  for pair in "${P_FETCH[@]}"; do [[ -s "$dir/bin/$(basename "${pair#*:}")" ]] || return 1; done
  if ((${#P_PKGS[@]} == 0)); then
    for b in "${P_BINS[@]}"; do [[ -s "$dir/bin/$b" ]] || return 1; done
    return 0
  fi
  for b in "${P_BINS[@]}"; do [[ -x "$dir/bin/$b" ]] || return 1; done
  run_versions "$dir" >/dev/null 2>&1
}

# Prints the first line of each version command; fails if one of them fails.
run_versions() {
  local dir="$1" c out argv
  for c in "${P_VERSION[@]}"; do
    read -ra argv <<<"$c"
    out="$("$dir/bin/${argv[0]}" "${argv[@]:1}" 2>&1)" || return 1
    printf '%s\n' "${out%%$'\n'*}"
  done
}

install_peer() {
  local name="$1"
  P_PREPARE=""
  P_FETCH=()
  "peer_${name}"
  local dest="$TOOLS_DIR/$P_DIR"
  mkdir -p "$TOOLS_DIR/.logs" "$TOOLS_DIR/.locks"

  # Serialise concurrent installs of the same peer (other shells, other jobs).
  exec {lockfd}>"$TOOLS_DIR/.locks/$name"
  if command -v flock >/dev/null 2>&1; then flock "$lockfd"; fi

  if is_installed; then
    log "$name" "cached: $dest/bin"
    run_versions "$dest" | sed "s/^/[$name]   /"
    exec {lockfd}>&-
    return 0
  fi

  local tmp logf="$TOOLS_DIR/.logs/$name.log" start=$SECONDS i
  tmp="$(mktemp -d "$TOOLS_DIR/.build-$name.XXXXXX")"
  mkdir -p "$tmp/bin"
  log "$name" "building $P_DIR from e2e/tools/$P_MOD (log: $logf)"
  : >"$logf"
  P_BUILD_FLAGS=()
  if ((${#P_FETCH[@]})); then
    if ! fetch_files "$tmp" >>"$logf" 2>&1; then
      log "$name" "FAILED fetching; last lines of $logf:"
      tail -n 30 "$logf" >&2
      rm -rf "$tmp"; exec {lockfd}>&-; return 1
    fi
    if ((${#P_PKGS[@]} == 0)); then
      recipe_stamp >"$tmp/.stamp"
      rm -rf "$dest"; mv "$tmp" "$dest"; chmod 755 "$dest"
      log "$name" "fetched: $dest/bin"
      exec {lockfd}>&-
      return 0
    fi
  fi
  if [[ -n "${P_PREPARE:-}" ]] && ! "$P_PREPARE" "$tmp" >>"$logf" 2>&1; then
    log "$name" "FAILED preparing the build; last lines of $logf:"
    tail -n 30 "$logf" >&2
    rm -rf "$tmp"
    exec {lockfd}>&-
    return 1
  fi
  for i in "${!P_PKGS[@]}"; do
    if ! "$GO" build -C "$HERE/$P_MOD" "${P_BUILD_FLAGS[@]}" -trimpath -tags "$P_TAGS" -ldflags "$P_LDFLAGS" \
          -o "$tmp/bin/${P_BINS[$i]}" "${P_PKGS[$i]}" >>"$logf" 2>&1; then
      log "$name" "FAILED after $((SECONDS - start))s; last lines of $logf:"
      tail -n 30 "$logf" >&2
      rm -rf "$tmp"
      exec {lockfd}>&-
      return 1
    fi
  done
  if ! run_versions "$tmp" >/dev/null 2>&1; then
    log "$name" "FAILED: built binary does not run"; run_versions "$tmp" >&2 || true
    rm -rf "$tmp"; exec {lockfd}>&-; return 1
  fi
  rm -rf "$tmp/src"
  recipe_stamp >"$tmp/.stamp"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  chmod 755 "$dest"
  log "$name" "built in $((SECONDS - start))s: $dest/bin"
  run_versions "$dest" | sed "s/^/[$name]   /"
  exec {lockfd}>&-
}

write_env() {
  local envf="$TOOLS_DIR/env.sh" tmp name kv var bin
  tmp="$(mktemp "$TOOLS_DIR/.env.XXXXXX")"
  {
    echo "# Generated by e2e/tools/install.sh; source it to point the e2e harness at the test peers."
    for name in "${ALL_PEERS[@]}"; do
      "peer_${name}"
      for kv in "${P_ENV[@]}"; do
        var="${kv%%=*}"; bin="$TOOLS_DIR/$P_DIR/bin/${kv#*=}"
        if [[ -x "$bin" || -f "$bin" ]]; then printf 'export %s="%s"\n' "$var" "$bin"; fi
      done
    done
  } >"$tmp"
  chmod 644 "$tmp"
  mv "$tmp" "$envf"
  echo "wrote $envf:"
  sed -n 's/^export /  /p' "$envf"
}

main() {
  local peers=() p
  while (($#)); do
    case "$1" in
      -j) JOBS="$2"; shift 2 ;;
      -j*) JOBS="${1#-j}"; shift ;;
      -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      all) peers+=("${ALL_PEERS[@]}"); shift ;;
      *)
        if [[ " ${ALL_PEERS[*]} " != *" $1 "* ]]; then
          echo "install.sh: unknown peer '$1' (known: ${ALL_PEERS[*]})" >&2; exit 2
        fi
        peers+=("$1"); shift ;;
    esac
  done
  ((${#peers[@]})) || peers=("${ALL_PEERS[@]}")
  [[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "install.sh: bad -j '$JOBS'" >&2; exit 2; }

  mkdir -p "$TOOLS_DIR"
  TOOLS_DIR="$(cd "$TOOLS_DIR" && pwd)"
  echo "Go: $("$GO" version); tools dir: $TOOLS_DIR; jobs: $JOBS"

  local start=$SECONDS failed=() pids=() names=() i
  if ((JOBS == 1)); then
    for p in "${peers[@]}"; do install_peer "$p" || failed+=("$p"); done
  else
    for p in "${peers[@]}"; do
      while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
      install_peer "$p" &
      pids+=($!); names+=("$p")
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed+=("${names[$i]}"); done
  fi

  write_env
  echo "total: $((SECONDS - start))s"
  if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
  fi
}

main "$@"
