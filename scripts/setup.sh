#!/usr/bin/env bash
# Installs what building and testing Sluice needs on a Debian machine, if it is missing:
# the native build dependencies of RocksDB and librdkafka, Java and Maven for the local
# Kafka broker, and the rustfmt and clippy components. Safe to run again.
set -euo pipefail

packages=(clang libclang-dev cmake pkg-config libcurl4-openssl-dev libssl-dev libsasl2-dev
          zlib1g-dev libzstd-dev liblz4-dev curl)
command -v java >/dev/null || packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || packages+=(maven)

missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: Rust is needed (https://rustup.rs); cargo was not found" >&2
    exit 1
fi
if command -v rustup >/dev/null; then
    for c in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" >&2
    done
fi
