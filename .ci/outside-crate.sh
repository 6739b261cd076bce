#!/usr/bin/env bash
# The README's example, compiled and run as written in a fresh crate outside the repository
# that depends on multiproc by path: what a new user does first.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/src"
python3 - "$repo/README.md" > "$dir/src/main.rs" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.findall(r"```rust\n(.*?)```", text, re.S)
if not blocks:
    sys.exit("no ```rust block in README.md")
print(blocks[0], end="")
PY
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "readme-contract"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
multiproc = { path = "$repo/multiproc" }
serde = { version = "1", features = ["derive"] }

[workspace]
TOML
cd "$dir"
# Share the repository's target dir: the dependencies are already built there.
CARGO_TARGET_DIR="$repo/target" timeout 300 cargo run --quiet
echo "outside crate: the README example compiled and ran"
