#!/usr/bin/env bash
# Runs every test: unit, planner and end-to-end tests against a real local Kafka broker.
# Installs what is missing and starts the broker first (it stays up for the next run;
# `scripts/kafka-local.sh stop` ends it).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
SLUICE_TEST_BOOTSTRAP=$(scripts/kafka-local.sh start | tail -n 1)
export SLUICE_TEST_BOOTSTRAP
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}
# The end-to-end tests run the sluice binary: build it first.
cargo build --workspace --bins
cargo test --workspace
# Tests that restart the shared local broker run alone, after all the others.
cargo test -p sluice-e2e --test exactly_once -- --ignored

# The conformance ratchets: ksqlDB's query-validation cases (qtt: topics in, topics out;
# rest-qtt: REST responses of an in-process server), read from ../shared.
for suite in qtt rest-qtt; do
    cases=../shared/conformance/$suite
    if [ -d "$cases" ]; then
        "$CARGO_TARGET_DIR/debug/sluice" test "$suite" "$cases" \
            --min-pass "$(cat "conformance/$suite-min-pass")" \
            --report "$CARGO_TARGET_DIR/$suite-report.json" | tail -n 1
    else
        echo "test.sh: $cases not found; conformance cases skipped" >&2
    fi
done

# The same qtt cases with aggregations' groups in state stores that keep in memory only
# what the current record uses, a commit after every record: the store path must give
# the same results.
if [ -d ../shared/conformance/qtt ]; then
    SLUICE_TEST_STATE_STORES=0 "$CARGO_TARGET_DIR/debug/sluice" test qtt ../shared/conformance/qtt \
        --min-pass "$(cat conformance/qtt-min-pass)" | tail -n 1
    # And once more with every aggregation that regroups a stream cut in two at a
    # repartition topic, as it runs on Kafka over several partitions.
    SLUICE_TEST_REPARTITION=1 "$CARGO_TARGET_DIR/debug/sluice" test qtt ../shared/conformance/qtt \
        --min-pass "$(cat conformance/qtt-min-pass)" | tail -n 1
fi
