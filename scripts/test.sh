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
