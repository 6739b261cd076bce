#!/usr/bin/env bash
# Issue 14's user-facing contract (tests/contract/cluster.rs), compiled as written in a fresh
# crate outside the repository that depends on multiproc by path with the `cluster` feature.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/src"
cp "$repo/tests/contract/cluster.rs" "$dir/src/main.rs"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "cluster-contract"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
multiproc = { path = "$repo/multiproc", features = ["cluster"] }

[workspace]
TOML
cd "$dir"
CARGO_TARGET_DIR="$repo/target" timeout 600 cargo build --quiet
echo "outside crate: the cluster contract compiled"
