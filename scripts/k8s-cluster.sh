#!/usr/bin/env bash
# A real Kubernetes v1.20.2 control plane for the tests: etcd + kube-apiserver + kube-controller-manager on
# 127.0.0.1, built from Debian bookworm's own packages (the `kubernetes` source package, golang-1.19,
# etcd-server). No Docker, nothing installed system-wide. See docs/backends/kubernetes.md.
#
#   scripts/k8s-cluster.sh install   # once per machine (~6 min, cached in $K8S_HOME)
#   scripts/k8s-cluster.sh start     # ~7 s; prints KUBECONFIG=...
#   scripts/k8s-cluster.sh stop      # kills the processes it started, by PID, and removes $K8S_RUN
#
# Environment: K8S_HOME (binaries cache, default ~/.cache/opsctl-k8s-1.20.2), K8S_RUN (runtime dir:
# pki, etcd data, logs, pid files, kubeconfig; default /tmp/opsctl-k8s-$API_PORT), API_PORT (16443),
# ETCD_PORT (12379; the peer port is ETCD_PORT+1).
set -euo pipefail
H=${K8S_HOME:-$HOME/.cache/opsctl-k8s-1.20.2}
API_PORT=${API_PORT:-16443}
ETCD_PORT=${ETCD_PORT:-12379}
R=${K8S_RUN:-/tmp/opsctl-k8s-$API_PORT}
TOKEN=opsctl-test-token
PROCS=(kube-controller-manager kube-apiserver etcd)

have_binaries() {
  [ -x "$H/bin/kube-apiserver" ] && [ -x "$H/bin/kube-controller-manager" ] && [ -x "$H/bin/etcd" ]
}

install() {
  have_binaries && { echo "k8s binaries already in $H/bin"; return 0; }
  local apt="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$H/apt -o Dir::State::Lists=$H/apt/lists -o Dir::Cache=$H/apt/cache"
  mkdir -p "$H/apt/lists/partial" "$H/apt/cache/archives/partial" "$H/dl" "$H/root" "$H/bin"
  # the machine's own Debian sources, with source packages enabled as well
  sed 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources > "$H/apt/debian.sources"
  # shellcheck disable=SC2086
  apt-get $apt -qq update
  cd "$H/dl"
  # shellcheck disable=SC2086
  apt-get $apt -qq download golang-1.19-go golang-1.19-src etcd-server rsync libpopt0 \
    golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
  # shellcheck disable=SC2086
  apt-get $apt -qq source --download-only kubernetes
  for d in *.deb; do dpkg -x "$d" "$H/root"; done
  # Kubernetes' make needs rsync; run Debian's without installing it
  mkdir -p "$H/shim"
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$H/root/usr/lib/x86_64-linux-gnu" "$H/root/usr/bin/rsync" > "$H/shim/rsync"
  chmod +x "$H/shim/rsync"
  rm -rf "$H/src"; mkdir -p "$H/src"; tar -xzf kubernetes_*.orig.tar.gz -C "$H/src"
  # k8s 1.20 vendors reflect2 v1.0.1, which corrupts memory under Go >= 1.18 (the apiserver panics on
  # POST): swap in Debian's reflect2 1.0.2 and json-iterator 1.1.12
  local v g
  v=$(echo "$H"/src/kubernetes-*/vendor/github.com); g="$H/root/usr/share/gocode/src/github.com"
  rm -rf "$v/modern-go/reflect2" "$v/json-iterator/go"
  cp -r "$g/modern-go/reflect2" "$v/modern-go/"; cp -r "$g/json-iterator/go" "$v/json-iterator/"
  ( cd "$H/src"/kubernetes-*
    unset GOPATH
    export PATH="$H/root/usr/lib/go-1.19/bin:$H/shim:$PATH" GOCACHE="$H/gocache" CGO_ENABLED=0 GOFLAGS= GOPROXY=off
    # plain `go build` fails on this tree; Kubernetes' own make works offline
    make all WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$H/build.log" 2>&1 || { tail -40 "$H/build.log"; exit 1; }
    cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$H/bin/" )
  cp "$H/root/usr/bin/etcd" "$H/bin/"
  rm -rf "$H/src" "$H/gocache" "$H/dl" "$H/root" "$H/apt"   # build intermediates (~3.5 GB)
}

make_pki() {
  [ -f pki/ca.crt ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -keyout pki/ca.key -out pki/ca.crt -days 30 -subj /CN=opsctl-test-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout pki/api.key -out pki/api.csr -subj /CN=kube-apiserver 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > pki/ext.cnf
  openssl x509 -req -in pki/api.csr -CA pki/ca.crt -CAkey pki/ca.key -CAcreateserial -out pki/api.crt -days 30 -extfile pki/ext.cnf 2>/dev/null
  openssl genrsa -out pki/sa.key 2048 2>/dev/null; openssl rsa -in pki/sa.key -pubout -out pki/sa.pub 2>/dev/null
  echo "$TOKEN,admin,admin,system:masters" > pki/tokens.csv
}

write_kubeconfig() {
  cat > kubeconfig <<KC
apiVersion: v1
kind: Config
clusters: [{name: opsctl-test, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$R/pki/ca.crt"}}]
users: [{name: admin, user: {token: $TOKEN}}]
contexts: [{name: opsctl-test, context: {cluster: opsctl-test, user: admin}}]
current-context: opsctl-test
KC
}

# wait_for URL-PATH GREP-PATTERN: poll the apiserver (0.25 s steps, 60 s at most)
wait_for() {
  local c=(curl -sf --max-time 2 --cacert pki/ca.crt -H "Authorization: Bearer $TOKEN")
  for _ in $(seq 240); do
    "${c[@]}" "https://127.0.0.1:$API_PORT$1" 2>/dev/null | grep -q "$2" && return 0
    sleep 0.25
  done
  return 1
}

start() {
  have_binaries || { echo "k8s binaries missing in $H/bin: run '$0 install' first (~6 min, once)" >&2; exit 1; }
  for p in "${PROCS[@]}"; do
    if [ -f "$R/$p.pid" ] && kill -0 "$(cat "$R/$p.pid")" 2>/dev/null; then
      echo "already running ($R/$p.pid); run '$0 stop' first" >&2; exit 1
    fi
  done
  mkdir -p "$R/pki" "$R/log"; cd "$R"
  make_pki
  setsid "$H/bin/etcd" --data-dir "$R/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT+1))" \
    --unsafe-no-fsync --log-level warn >log/etcd.log 2>&1 < /dev/null & echo $! > etcd.pid
  # etcd first: if it cannot start (a port taken since it was picked), say so now, not after the
  # apiserver has retried it for a minute
  local up=""
  for _ in $(seq 80); do
    curl -sf --max-time 1 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q true && { up=1; break; }
    kill -0 "$(cat etcd.pid)" 2>/dev/null || break
    sleep 0.25
  done
  [ -n "$up" ] || { echo "etcd did not start on 127.0.0.1:$ETCD_PORT:" >&2; tail -20 log/etcd.log >&2; stop; exit 1; }
  setsid "$H/bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 --secure-port "$API_PORT" --tls-cert-file pki/api.crt --tls-private-key-file pki/api.key \
    --token-auth-file pki/tokens.csv --authorization-mode RBAC --service-account-key-file pki/sa.pub \
    --service-account-signing-key-file pki/sa.key --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none --kubelet-preferred-address-types InternalIP \
    --enable-priority-and-fairness=false >log/kube-apiserver.log 2>&1 < /dev/null & echo $! > kube-apiserver.pid
  write_kubeconfig
  wait_for /readyz ok || { tail -20 log/kube-apiserver.log log/etcd.log >&2; stop; exit 1; }
  # no kubelet: the node-lifecycle controller would evict the fake kubelet's pods
  setsid "$H/bin/kube-controller-manager" --kubeconfig "$R/kubeconfig" --leader-elect=false \
    --service-account-private-key-file pki/sa.key --root-ca-file pki/ca.crt \
    --controllers '*,-nodelifecycle,-bootstrapsigner,-tokencleaner' --secure-port 0 --port 0 \
    >log/kube-controller-manager.log 2>&1 < /dev/null & echo $! > kube-controller-manager.pid
  # pods can be created only once the 'default' ServiceAccount has its token
  wait_for /api/v1/namespaces/default/serviceaccounts/default '"secrets"' \
    || { tail -20 log/kube-controller-manager.log >&2; stop; exit 1; }
  echo "KUBECONFIG=$R/kubeconfig"
}

stop() {
  local pids=() alive
  for p in "${PROCS[@]}"; do
    [ -f "$R/$p.pid" ] && pids+=("$(cat "$R/$p.pid")")
  done
  # all at once: the apiserver's graceful shutdown is what takes time, no need to queue behind it
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 30); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for p in "${PROCS[@]}"; do rm -f "$R/$p.pid"; done
  # only what start() created, never a whole arbitrary directory
  rm -rf "$R/etcd" "$R/pki" "$R/log" "$R/kubeconfig"
  rmdir "$R" 2>/dev/null || true
}

case "${1:-}" in
  install|start|stop) "$1" ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
