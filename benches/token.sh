#!/usr/bin/env bash
# Token issuance throughput (client credentials, ES256 tokens), driven by `portcullis bench`
# with benches/scenarios/token.yaml: one instance, and two instances sharing one store, for
# each store — SQLite (two processes read one file; WAL lets them) and PostgreSQL (a
# throwaway cluster on 127.0.0.1:21432, run as the `postgres` user when this runs as root).
#
#   benches/token.sh                    # BENCH_SECONDS=10 by default; BENCH_STORES="sqlite postgres"
#   BENCH_BASELINE=/path/to/older/portcullis benches/token.sh   # that build too, same rounds
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
W=$(mktemp -d /tmp/portcullis-token.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== building (release)" >&2
cargo build --release --quiet
PC=$PWD/target/release/portcullis
"$PC" certs dev --dir "$W/certs" >/dev/null

config() { # file port store
  cat > "$W/$1" <<YAML
version: 1
listeners:
  - { name: public, bind: "127.0.0.1:$2", tls: { certificates: [{ cert: certs/server.pem, key: certs/server-key.pem }] } }
identity:
  listener: public
  issuer: https://localhost
  signing_key: certs/token-signing-key.pem
  store: "$3"
  rate_limit: { failures_per_ip: 1000000/min, failures_per_client: 1000000/min, issued_per_client: 4000000000/h }
YAML
}

PG_PORT=21432
start_postgres() {
  local bin; bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$bin" ] || bin=$(dirname "$(command -v initdb)")
  local as=(); [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  mkdir -p "$W/pg"; chmod 755 "$W"
  if [ "$(id -u)" = 0 ]; then chown postgres "$W/pg"; fi
  "${as[@]}" "$bin/initdb" -D "$W/pg/data" -U bench -A trust -N --no-instructions >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$W/pg/data" -l "$W/pg/log" -w -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$W/pg -c max_connections=100" start >/dev/null
  PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$W/pg/data" -m fast -w stop)
  "$bin/psql" -h 127.0.0.1 -p $PG_PORT -U bench -d postgres -qc "CREATE DATABASE identity"
}
PG_STOP=()
trap 'cleanup; [ ${#PG_STOP[@]} -gt 0 ] && "${PG_STOP[@]}" >/dev/null 2>&1 || true' EXIT

prepare() { # store location: configurations and four systems in that store
  config one.yaml 21443 "$1"
  config two.yaml 21444 "$1"
  sed "s|CERTS|$W/certs|; s|duration: 10s|duration: ${SECONDS_PER_RUN}s|" benches/scenarios/token.yaml > "$W/token.yaml"
  for i in 1 2 3 4; do
    out=$("$PC" systems --config "$W/one.yaml" --actor bench create "app-$i-$RANDOM")
    id=$(awk -F': *' '/client id/ {print $2}' <<<"$out")
    secret=$(awk -F': *' '/primary secret/ {print $2}' <<<"$out")
    sed -i "s|BASIC_$i|$(printf '%s:%s' "$id" "$secret" | base64 -w0)|" "$W/token.yaml"
  done
  sed "s|connections: 32|connections: 16|" "$W/token.yaml" > "$W/token-half.yaml"
}

start() { # binary config log
  "$1" --log-level warn --access-log off run --config "$W/$2" >"$W/$3" 2>&1 & PIDS+=($!)
}
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }
rps() {
  python3 - "$1" <<'PY'
import json, sys
t = json.loads(sys.argv[1])["total"]
print(f"{t['rps']:.0f} req/s, p99 {t['p99_ms']:.2f} ms")
PY
}
measure() { # label binary
  local label=$1 bin=$2
  start "$bin" one.yaml "$label-one.log"; start "$bin" two.yaml "$label-two.log"
  wait_port 21443; wait_port 21444
  local one; one=$("$PC" bench --url https://localhost:21443 --scenario "$W/token.yaml" --json 2>/dev/null)
  echo "$label, one instance:   $(rps "$one")"
  "$PC" bench --url https://localhost:21443 --scenario "$W/token-half.yaml" --json > "$W/a.json" 2>/dev/null &
  local a=$!
  local b; b=$("$PC" bench --url https://localhost:21444 --scenario "$W/token-half.yaml" --json 2>/dev/null)
  wait "$a"
  python3 - "$W/a.json" "$b" "$label" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["total"]
b = json.loads(sys.argv[2])["total"]
print(f"{sys.argv[3]}, two instances: {a['rps'] + b['rps']:.0f} req/s together ({a['rps']:.0f} + {b['rps']:.0f}), p99 {max(a['p99_ms'], b['p99_ms']):.2f} ms")
PY
  cleanup; PIDS=(); sleep 0.5
}
for store in ${BENCH_STORES:-sqlite postgres}; do
  case $store in
    sqlite) prepare "sqlite:identity.db" ;;
    postgres) start_postgres; prepare "postgres://bench@127.0.0.1:$PG_PORT/identity?sslmode=disable" ;;
    *) echo "unknown store $store" >&2; exit 2 ;;
  esac
  echo "== $store store" >&2
  measure "$store, this build" "$PC"
  if [ -n "${BENCH_BASELINE:-}" ]; then measure "$store, baseline" "$BENCH_BASELINE"; fi
done
echo "(ES256 tokens, 32 connections in all; the load generator shares the 2 CPUs)"
