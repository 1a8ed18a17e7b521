#!/usr/bin/env bash
# Brings Sluice up and runs an example end to end: starts the local Kafka broker, builds
# and starts a Sluice server, submits the example's statements over REST, produces its
# input records and prints the records the query writes.
#
#   scripts/demo.sh [EXAMPLE_DIR]     (default: sql-examples/clickstream-filter)
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-sql-examples/clickstream-filter}
port=${SLUICE_DEMO_PORT:-8088}

scripts/setup.sh
bootstrap=$(scripts/kafka-local.sh start | tail -n 1)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}
cargo build --bin sluice --bin sluice-example

run_dir=$(mktemp -d)
echo "demo: starting sluice on http://127.0.0.1:$port (log: $run_dir/sluice.log)" >&2
"$CARGO_TARGET_DIR/debug/sluice" server --bootstrap-servers "$bootstrap" \
    --listen "127.0.0.1:$port" --service-id "demo_$(date +%s)" \
    --state-dir "$run_dir/state" >"$run_dir/sluice.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$port/info" >/dev/null 2>&1 && break
    kill -0 $server 2>/dev/null || { cat "$run_dir/sluice.log" >&2; exit 1; }
    sleep 0.2
done
"$CARGO_TARGET_DIR/debug/sluice-example" --server "http://127.0.0.1:$port" "$example"
