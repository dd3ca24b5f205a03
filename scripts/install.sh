#!/usr/bin/env bash
# Installs rootpack (as root): builds it, puts the binary in PREFIX/bin and the manual pages
# in PREFIX/share/man/man1, where `man rootpack` finds them. PREFIX defaults to /usr/local.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release
install -D -m 0755 target/release/rootpack "$prefix/bin/rootpack"
"$prefix/bin/rootpack" man --install "$prefix/share/man/man1"
if command -v mandb >/dev/null; then
	mandb -q "$prefix/share/man" 2>/dev/null || true
fi
