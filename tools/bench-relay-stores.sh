#!/usr/bin/env bash
# Runs the relay load generator against: one relay on SQLite, one relay on PostgreSQL, and two
# relays on one PostgreSQL database (clients spread over both, so in live mode every message
# crosses from one relay to the other). Prints the load generator's output, the relays' CPU (via
# --relay-pid) and PostgreSQL's CPU per message (all postgres processes, from /proc).
#
#   tools/bench-relay-stores.sh [SCENARIO...]     scenarios: fwd p99 offline (default: all three)
#
# Needs a release build (cargo build --release -p sotto), PostgreSQL on 127.0.0.1:5432 with a
# database `test` (PGURL overrides), psql. Each PostgreSQL run uses a fresh schema, dropped after.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CARGO_TARGET_DIR:-target}/release
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/test}
SCENARIOS=${*:-fwd p99 offline}
DURATION=${DURATION:-10s}
W=$(mktemp -d)
trap 'for p in $(cat "$W/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done; rm -rf "$W"' EXIT

pg_cpu() { # total CPU seconds of all postgres processes
  local t=0
  for p in $(pgrep -x postgres); do
    t=$(awk -v t="$t" '{ sub(/.*\) /, ""); split($0, f, " "); print t + (f[12] + f[13]) / 100 }' "/proc/$p/stat" 2>/dev/null || echo "$t")
  done
  echo "$t"
}

start_relay() { # store port -> prints pid
  "$B/sotto" relay --listen "127.0.0.1:$2" --store "$1" --max-unauth-per-ip 10000 \
    >"$W/relay-$2.out" 2>"$W/relay-$2.err" &
  local pid=$!
  echo "$pid" >>"$W/pids"
  for _ in $(seq 100); do grep -q listening "$W/relay-$2.out" 2>/dev/null && break; sleep 0.1; done
  echo "$pid"
}

bench_args() {
  case $1 in
    fwd) echo "--mode live --clients 1000 --window 16 --duration $DURATION" ;;
    p99) echo "--mode live --clients 1000 --window 16 --rate 5000 --duration $DURATION" ;;
    offline) echo "--mode offline --clients 100 --window 64 --messages 50000" ;;
  esac
}

for scenario in $SCENARIOS; do
  for setup in sqlite pg1 pg2; do
    schema="sotto_bench_$RANDOM$RANDOM"
    case $setup in
      sqlite)
        rm -f "$W"/relay.db*
        pids=$(start_relay "sqlite:$W/relay.db" 7979); urls=ws://127.0.0.1:7979/ ;;
      pg1|pg2)
        psql -q "$PGURL" -c "CREATE SCHEMA $schema"
        store="$PGURL?options=-csearch_path%3D$schema"
        pids=$(start_relay "$store" 7979); urls=ws://127.0.0.1:7979/
        if [ $setup = pg2 ]; then
          pids="$pids,$(start_relay "$store" 7980)"; urls="$urls,ws://127.0.0.1:7980/"
        fi ;;
    esac
    echo "=== $scenario on $setup ($(date -u +%H:%M:%S), load average $(cut -d' ' -f1-3 /proc/loadavg))"
    c0=$(pg_cpu)
    # shellcheck disable=SC2046
    "$B/sotto" bench relay --url "$urls" --relay-pid "$pids" $(bench_args "$scenario") 2>"$W/bench.err" || tail -5 "$W/bench.err"
    c1=$(pg_cpu)
    [ $setup != sqlite ] && echo "postgres CPU during the run: $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.1f s", b - a }')"
    for p in ${pids//,/ }; do
      kill -TERM "$p" 2>/dev/null || true
      while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
    done
    [ $setup != sqlite ] && psql -q "$PGURL" -c "DROP SCHEMA $schema CASCADE"
    sleep 1
  done
done
