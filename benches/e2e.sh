#!/usr/bin/env bash
# End-to-end load benchmark: portcullis side by side with HAProxy on this machine, same chain.
#
#   benches/e2e.sh            # BENCH_SECONDS=10 BENCH_RUNS=3 BENCH_CONNECTIONS=64 by default
#   BENCH_BASELINE=/path/to/older/portcullis benches/e2e.sh   # also that build's plain and chain
#                             # paths, in the same interleaved rounds (before/after a change),
#                             # started like portcullis-* (or with BENCH_BASELINE_FLAGS)
#   BENCH_PATHS="portcullis-chain baseline-chain"   # only these paths (and direct), e.g. for a
#                             # focused before/after with more BENCH_RUNS
#   BENCH_ALLOCS=1            # allocator calls per request (needs perf)
#   BENCH_PROFILE=1           # a perf profile of each chain gateway under load, top symbols
#   BENCH_SOAK_SECONDS=60     # resident memory of the default chain gateway over a long run
#
# portcullis-* run as operators start them: `portcullis run --config FILE`, no flags, no
# environment variables, the access log on (stdout, redirected to a file). tuned-* add
# `--workers 1 --access-log off`.
#
# Builds in release mode, installs HAProxy and nginx from the distribution when missing, starts
# nginx (a static 100-byte 200, plain HTTP for the proxies and TLS for the direct path), HAProxy
# and portcullis with the same policies, pins the proxy to CPU 0 and nginx + the load generator
# to CPU 1, drives each with `portcullis bench` (checking every status), and prints one table
# with medians and the ratios against HAProxy and the direct path. Runs are interleaved: each
# round runs every path once, and a ratio is the median of the ratios within each round, so a
# machine whose speed drifts (a shared host) does not favour whichever path ran first.
#
# "chain" = IP allow-list + client certificate verified at the handshake (and matched) + JWT
# RS256 (RSA-2048) with iss/aud/exp + CORS, every request allowed. "authz" = the chain +
# authorize (an account-scoped rule against the path) + a rate limit per token subject that
# never denies, in memory; "redis" = the same with the rate limit in a local redis-server
# (pinned with nginx and the load generator to CPU 1).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
RUNS=${BENCH_RUNS:-3}
CONNS=${BENCH_CONNECTIONS:-64}
ulimit -n 65536 2>/dev/null || true
W=$(mktemp -d /tmp/portcullis-e2e.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need haproxy haproxy
need nginx nginx-light
need openssl openssl
need taskset util-linux
need redis-server redis-server

echo "== building (release)" >&2
cargo build --release --quiet
PC=$PWD/target/release/portcullis

echo "== key material in $W" >&2
"$PC" certs dev --dir "$W/certs" >/dev/null
C=$W/certs
cat "$C/server.pem" "$C/server-key.pem" > "$W/haproxy.pem"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/jwt-key.pem" 2>/dev/null
openssl pkey -in "$W/jwt-key.pem" -pubout -out "$W/jwt.pub.pem"
BODY=$(printf 'x%.0s' $(seq 1 100))

cat > "$W/nginx.conf" <<NGINX
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18080; location / { return 200 "$BODY"; } }
  server {
    listen 127.0.0.1:18443 ssl;
    ssl_certificate $C/server.pem; ssl_certificate_key $C/server-key.pem; ssl_protocols TLSv1.3;
    location / { return 200 "$BODY"; }
  }
}
NGINX

cat > "$W/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  cpu-map 1/1 0
  maxconn 8000
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend plain
  bind 127.0.0.1:19443 ssl crt $W/haproxy.pem ssl-min-ver TLSv1.3 alpn http/1.1
  default_backend nginx
frontend chain
  bind 127.0.0.1:19444 ssl crt $W/haproxy.pem ssl-min-ver TLSv1.3 alpn http/1.1 ca-file $C/client-ca.pem verify required
  http-request deny unless { src 127.0.0.0/8 }
  http-request deny unless { ssl_c_s_dn(CN) -m str demo-client }
  http-request deny if { req.hdr(origin) -m found } !{ req.hdr(origin) -m str https://portal.example.com }
  http-request set-var(txn.origin) req.hdr(origin)
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request set-var(txn.now) date
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request return status 401 unless { var(txn.alg) -m str RS256 }
  http-request return status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$W/jwt.pub.pem") -m int 1 }
  http-request return status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str https://idp.bench }
  http-request return status 401 unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str api://bench }
  http-request return status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-response set-header Access-Control-Allow-Origin %[var(txn.origin)] if { var(txn.origin) -m found }
  http-response add-header Vary Origin
  default_backend nginx
backend nginx
  server n1 127.0.0.1:18080
HAPROXY

gateway() { # name port chain(yes/no) token_cache [rate-limit store: memory | redis://…]
  local policies="" auth="" match="{}" store=${5:-}
  if [ "$3" = yes ]; then
    policies="policies: [office, partner, jwt, cors],"
    auth="client_auth: { mode: required, trusted_cas: $C/client-ca.pem }"
  fi
  if [ -n "$store" ]; then  # the chain, then authorize by account and a generous rate limit
    policies="policies: [office, partner, jwt, cors, access, limit],"
    match='{ path: "/accounts/{account}/**" }'
  fi
  cat > "$W/$1.yaml" <<YAML
version: 1
listeners:
  - name: public
    bind: 127.0.0.1:$2
    tls:
      certificates: [{ cert: $C/server.pem, key: $C/server-key.pem }]
      min_version: "1.3"
      $auth
    limits: { max_connections: 20000 }
backends:
  nginx: { urls: [http://127.0.0.1:18080] }
policies:
  office: { ip_filter: { allow: [127.0.0.0/8] } }
  partner: { client_cert: { identities: [{ subject: "CN=demo-client,O=Example" }] } }
  jwt: { jwt: { issuers: [https://idp.bench], audiences: [api://bench], algorithms: [RS256], keys: [$W/jwt.pub.pem], token_cache: ${4:-4096} } }
  cors: { cors: { allowed_origins: [https://portal.example.com], terminate_unmatched: true } }
  access: { authorize: { roles_claim: roles, rules: [{ name: own-account, roles: [Partner], scope: account, path_param: account, claim: account_id, actions: [read] }] } }
  limit: { rate_limit: { key: "claim:sub", rate: 1000000/s, store: "${store:-memory}" } }
routes:
  - { name: all, match: $match, $policies backend: nginx }
YAML
}
gateway portcullis-plain 20443 no
gateway portcullis-chain 20444 yes
# Every token verified, as if each were new: the verified-token cache is off. (A load
# generator that signs a fresh RS256 token per request tops out near 500 req/s on one core, so
# the proxies' verification cost is measured this way instead.)
gateway portcullis-verify 20445 yes 0
gateway tuned-plain 20448 no
gateway tuned-chain 20449 yes
# The chain plus authorize and a rate limit that never denies, in memory and in Redis.
gateway portcullis-authz 20450 yes 4096 memory
gateway portcullis-redis 20451 yes 4096 redis://127.0.0.1:20452
BASELINE=${BENCH_BASELINE:-}
if [ -n "$BASELINE" ]; then
  gateway baseline-plain 20446 no
  gateway baseline-chain 20447 yes
fi

scenario() { # file token(valid|fresh) keep_alive cert(yes/no) [path]
  local cert="" path=${5:-/items}
  [ "$4" = yes ] && cert="client_cert: $C/client.pem, client_key: $C/client-key.pem,"
  cat > "$W/$1" <<YAML
duration: ${SECONDS_PER_RUN}s
connections: $CONNS
keep_alive: $3
tls: { ca: $C/ca.pem, $cert server_name: localhost }
tokens:
  valid: { key: $W/jwt-key.pem, alg: RS256, claims: { iss: "https://idp.bench", aud: "api://bench", sub: bench, roles: [Partner], account_id: "42" } }
  fresh: { key: $W/jwt-key.pem, alg: RS256, unique: true, claims: { iss: "https://idp.bench", aud: "api://bench", sub: bench } }
requests:
  - { name: ok, url: $path, headers: { Authorization: "Bearer \${token:$2}", Origin: "https://portal.example.com" }, expect: 200 }
thresholds: { unexpected_status: 0 }
YAML
}
scenario plain.yaml valid true no
scenario chain.yaml valid true yes
scenario handshake.yaml valid false yes
scenario authz.yaml valid true yes /accounts/42/items

echo "== starting nginx, HAProxy, portcullis" >&2
taskset -c 1 nginx -c "$W/nginx.conf" -g 'daemon off;' & PIDS+=($!)
taskset -c 1 redis-server --port 20452 --bind 127.0.0.1 --save "" --appendonly no --dir "$W" >"$W/redis.log" 2>&1 & PIDS+=($!)
taskset -c 0 haproxy -f "$W/haproxy.cfg" -db >/dev/null 2>"$W/haproxy.log" & HAPROXY_PID=$!; PIDS+=($HAPROXY_PID)
# As operators start it: no flags, no environment; the access log (stdout) goes to a file.
for g in plain chain verify authz redis; do
  env -u MIMALLOC_ARENA_EAGER_COMMIT taskset -c 0 "$PC" run --config "$W/portcullis-$g.yaml" >"$W/$g.log" 2>&1 &
  PIDS+=($!); eval "PC_$g=$!"
done
# Tuned: one event loop on its one CPU (as HAProxy runs with `nbthread 1`), no access log.
for g in plain chain; do
  taskset -c 0 "$PC" --workers 1 --log-level warn --access-log off run --config "$W/tuned-$g.yaml" >"$W/tuned-$g.log" 2>&1 &
  PIDS+=($!); eval "TUNED_$g=$!"
done
BASELINE_PORTS=""
if [ -n "$BASELINE" ]; then
  for g in plain chain; do
    # shellcheck disable=SC2086  # BENCH_BASELINE_FLAGS is a list of flags
    taskset -c 0 "$BASELINE" ${BENCH_BASELINE_FLAGS:-} run --config "$W/baseline-$g.yaml" >"$W/baseline-$g.log" 2>&1 &
    PIDS+=($!); eval "BASE_$g=$!"
  done
  BASELINE_PORTS="20446 20447"
fi
for port in 18080 18443 19443 19444 20443 20444 20445 20448 20449 20450 20451 20452 $BASELINE_PORTS; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

for p in "${PIDS[@]}"; do  # a port held by a leftover process would be measured instead
  kill -0 "$p" 2>/dev/null || { echo "a server did not start (port in use?); see $W/*.log" >&2; exit 1; }
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# once NAME URL SCENARIO PID: one run; appends "round req/s p99_ms requests proxy_ticks" to $W/NAME.runs
once() {
  local name=$1 url=$2 file=$3 pid=${4:-} round=$5
  [[ " $PATHS " == *" $name "* ]] || return 0
  local before=0; [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  local json; json=$(taskset -c 1 "$PC" --workers 1 bench --url "$url" --scenario "$W/$file" --json 2>/dev/null) || {
    echo "$name: the run failed (unexpected statuses or errors):" >&2; echo "$json" >&2; exit 1; }
  local after=0; [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  local row; row=$(python3 -c 'import json,sys; t=json.loads(sys.argv[1])["total"]; print(sys.argv[3], t["rps"], t["p99_ms"], t["requests"], int(sys.argv[2]))' "$json" "$((after - before))" "$round")
  echo "$row" >> "$W/$name.runs"
  echo "  round $round $name: $row" >&2
}

PATHS="direct haproxy-plain portcullis-plain tuned-plain haproxy-chain portcullis-chain tuned-chain portcullis-authz portcullis-redis portcullis-verify haproxy-handshake portcullis-handshake"
[ -n "$BASELINE" ] && PATHS="$PATHS baseline-plain baseline-chain"
if [ -n "${BENCH_PATHS:-}" ]; then
  PATHS="direct $(for p in $PATHS; do [[ " $BENCH_PATHS " == *" $p "* ]] && printf '%s ' "$p"; done)"
fi
echo "== measuring (${RUNS} rounds of ${SECONDS_PER_RUN}s runs, ${CONNS} connections; each round runs every path once, so a machine that speeds up or slows down affects all paths alike)" >&2
for round in $(seq "$RUNS"); do
  once direct            https://localhost:18443 plain.yaml "" "$round"
  once haproxy-plain     https://localhost:19443 plain.yaml "$HAPROXY_PID" "$round"
  once portcullis-plain  https://localhost:20443 plain.yaml "$PC_plain" "$round"
  once tuned-plain       https://localhost:20448 plain.yaml "$TUNED_plain" "$round"
  once haproxy-chain     https://localhost:19444 chain.yaml "$HAPROXY_PID" "$round"
  once portcullis-chain  https://localhost:20444 chain.yaml "$PC_chain" "$round"
  once tuned-chain       https://localhost:20449 chain.yaml "$TUNED_chain" "$round"
  once portcullis-authz  https://localhost:20450 authz.yaml "$PC_authz" "$round"
  once portcullis-redis  https://localhost:20451 authz.yaml "$PC_redis" "$round"
  once portcullis-verify https://localhost:20445 chain.yaml "$PC_verify" "$round"
  once haproxy-handshake https://localhost:19444 handshake.yaml "$HAPROXY_PID" "$round"
  once portcullis-handshake https://localhost:20444 handshake.yaml "$PC_chain" "$round"
  if [ -n "$BASELINE" ]; then
    once baseline-plain    https://localhost:20446 plain.yaml "$BASE_plain" "$round"
    once baseline-chain    https://localhost:20447 chain.yaml "$BASE_chain" "$round"
  fi
done
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$PC_chain/status"); HWM=$(awk '/VmHWM/ {print $2}' "/proc/$PC_chain/status")
SOAK=${BENCH_SOAK_SECONDS:-0}
if [ "$SOAK" -gt 0 ]; then  # memory growth under a long run
  sed -i "s/^duration: .*/duration: ${SOAK}s/" "$W/chain.yaml"
  taskset -c 1 "$PC" bench --url https://localhost:20444 --scenario "$W/chain.yaml" --json >/dev/null 2>&1 &
  SOAK_PID=$!
  sleep 10; SOAK_START=$(awk '/VmRSS/ {print $2}' "/proc/$PC_chain/status"); wait "$SOAK_PID"
  SOAK_END=$(awk '/VmRSS/ {print $2}' "/proc/$PC_chain/status")
  echo "soak: portcullis chain RSS $((SOAK_START / 1024)) MiB after 10 s, $((SOAK_END / 1024)) MiB after ${SOAK} s"
fi
HRSS=$(awk '/VmRSS/ {print $2}' "/proc/$HAPROXY_PID/status")

# BENCH_ALLOCS=1: allocator calls per request (uprobes on mimalloc's entry points, counted
# in the gateway process only over exactly 20,000 requests; needs perf, from linux-perf).
if [ "${BENCH_ALLOCS:-0}" = 1 ]; then
  need perf linux-perf
  perf probe -q -d 'probe_portcullis:*' 2>/dev/null || true
  perf probe -q -x "$PC" -a mi_malloc_aligned -a mi_zalloc_aligned -a mi_realloc_aligned
  for g in plain chain; do
    grep -v '^duration' "$W/$g.yaml" | sed 's/^connections: .*/connections: 8\nrequests_total: 20000/' > "$W/allocs-$g.yaml"
  done
  for target in "portcullis-plain $PC_plain 20443" "portcullis-chain $PC_chain 20444" \
                "tuned-plain $TUNED_plain 20448" "tuned-chain $TUNED_chain 20449"; do
    read -r name pid port <<<"$target"
    perf stat -e 'probe_portcullis:*' -x, -p "$pid" -o "$W/allocs-$name.txt" & STAT=$!
    sleep 0.5
    taskset -c 1 "$PC" --workers 1 bench --url "https://localhost:$port" --scenario "$W/allocs-${name#*-}.yaml" >/dev/null 2>&1
    kill -INT "$STAT"; wait "$STAT" || true
    awk -F, -v g="$name" '{n += $1} END {printf "allocations per request, %s: %.2f\n", g, n / 20000}' "$W/allocs-$name.txt"
  done
  perf probe -q -d 'probe_portcullis:*'
fi

# BENCH_PROFILE=1: where each chain gateway's CPU goes under the chain load (perf, 5 s each).
if [ "${BENCH_PROFILE:-0}" = 1 ]; then
  need perf linux-perf
  sed "s/^duration: .*/duration: 5s/" "$W/chain.yaml" > "$W/profile.yaml"
  for target in "portcullis-chain $PC_chain 20444" "tuned-chain $TUNED_chain 20449" ${BASELINE:+"baseline-chain $BASE_chain 20447"}; do
    read -r name pid port <<<"$target"
    perf record -q -F 4999 -p "$pid" -o "$W/perf-$name.data" -- sleep 5 >/dev/null 2>&1 & REC=$!
    taskset -c 1 "$PC" --workers 1 bench --url "https://localhost:$port" --scenario "$W/profile.yaml" >/dev/null 2>&1
    wait "$REC" || true
    echo "profile of $name: self time by symbol, top 30 (perf report -i $W/perf-$name.data)"
    perf report -i "$W/perf-$name.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
      | awk '/^ +[0-9]/ && n++ < 30 { sub(/ +- +- *$/, ""); print }'
  done
fi
TRSS=$(awk '/VmRSS/ {print $2}' "/proc/$TUNED_chain/status")

python3 - "$W" "$PATHS" "$RSS" "$HWM" "$HRSS" "$TRSS" <<'PY'
import os, statistics, sys
w, paths = sys.argv[1], sys.argv[2].split()
hz = os.sysconf("SC_CLK_TCK")
runs = {}  # path -> {round: (rps, p99, cpu µs/req)}
for p in paths:
    runs[p] = {}
    for line in open(f"{w}/{p}.runs"):
        rnd, rps, p99, n, ticks = line.split()
        cpu = (int(ticks) / hz) / float(n) * 1e6 if int(ticks) else float("nan")
        runs[p][rnd] = (float(rps), float(p99), cpu)
def median(values):
    return statistics.median(values)
def baseline(name):
    kind = name.split("-", 1)[1] if "-" in name else None
    kind = "chain" if kind == "verify" else kind  # HAProxy verifies every token anyway
    return f"haproxy-{kind}" if kind else None
print(f"{'path':<22}{'req/s':>10}{'p99 ms':>9}{'CPU µs/req':>12}{'vs HAProxy':>12}{'vs direct':>11}")
for p in paths:
    rounds = runs[p]
    rps = median(r[0] for r in rounds.values())
    p99 = median(r[1] for r in rounds.values())
    cpu = median(r[2] for r in rounds.values())
    # Ratios are taken within a round (runs seconds apart), then the median over rounds.
    ha = baseline(p)
    vs = ""
    if p.startswith(("portcullis", "tuned", "baseline")) and ha in runs:
        ratios = [rounds[k][0] / runs[ha][k][0] for k in rounds]
        vs = f"{median(ratios):.2f}x"
    direct = median(rounds[k][0] / runs["direct"][k][0] for k in rounds)
    cpu_s = "" if cpu != cpu else f"{cpu:.1f}"
    print(f"{p:<22}{rps:>10.0f}{p99:>9.2f}{cpu_s:>12}{vs:>12}{direct:>10.0%}")
for p in paths:
    ha = baseline(p)
    if p.startswith(("portcullis", "tuned", "baseline")) and ha in runs:
        ratios = [runs[p][k][0] / runs[ha][k][0] for k in sorted(runs[p])]
        print(f"  {p} / {ha} per round: " + " ".join(f"{r:.2f}" for r in ratios))
for extra in ("portcullis-authz", "portcullis-redis"):  # what authorize + rate_limit add to the chain
    if extra not in runs or "portcullis-chain" not in runs:
        continue
    ratios = [runs[extra][k][0] / runs["portcullis-chain"][k][0] for k in sorted(runs[extra])]
    extra_cpu = median(runs[extra][k][2] - runs["portcullis-chain"][k][2] for k in runs[extra])
    print(f"  {extra} / portcullis-chain: {median(ratios):.2f}x (per round: " + " ".join(f"{r:.2f}" for r in ratios) + f"), {extra_cpu:+.1f} CPU µs/req")
for kind in ("plain", "chain"):  # this build against the baseline build, round by round
    new, old = f"portcullis-{kind}", f"baseline-{kind}"
    if old in runs and new in runs:
        ratios = [runs[new][k][0] / runs[old][k][0] for k in sorted(runs[old])]
        cpu = median(runs[new][k][2] - runs[old][k][2] for k in runs[old])
        print(f"  {new} / {old}: {median(ratios):.2f}x (per round: " + " ".join(f"{r:.2f}" for r in ratios) + f"), {cpu:+.1f} CPU µs/req")
print(f"portcullis chain RSS after the runs: {int(sys.argv[3]) // 1024} MiB (peak {int(sys.argv[4]) // 1024} MiB), tuned {int(sys.argv[6]) // 1024} MiB; HAProxy: {int(sys.argv[5]) // 1024} MiB")
print("(medians over rounds; ratios are medians of per-round ratios. portcullis-*: no flags, access log to a file; tuned-*: --workers 1 --access-log off. verify: the chain with the token cache off, every token verified; handshake: req/s = new TLS 1.3 connections with a client certificate per second; authz: the chain + authorize (account scope) + rate_limit (memory); redis: the same with the rate limit in Redis)")
PY
