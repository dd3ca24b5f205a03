#!/usr/bin/env bash
# Installs what building and testing rootpack needs on Debian/Ubuntu (as root), skipping
# what is already there: the Debian packages, and Rust (by rustup) when cargo is missing.
set -euo pipefail

packages=(
	build-essential pkg-config curl ca-certificates              # building
	e2fsprogs util-linux mount                                   # images: mke2fs, debugfs, losetup
	cpio busybox-static initramfs-tools-core python3 bsdutils    # test fixtures and peers
	gcc-multilib                                                 # a 32-bit probe for the i386 filter
	gzip zstd xz-utils bzip2 lz4 lzop                            # every initramfs compression
	qemu-system-x86                                              # a kernel boots what pack writes
	containernetworking-plugins iptables iproute2 slirp4netns    # private networks, -p
)
# Container images in and out, the peers the tests check outputs with; with their
# recommended packages, which podman needs to run as it does on a desktop.
containers=(podman runc skopeo umoci docker-registry containerd bats)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
missing_containers=()
for p in "${containers[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing_containers+=("$p")
done
if ((${#missing[@]} + ${#missing_containers[@]})); then
	apt-get update -qq
fi
if ((${#missing[@]})); then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ((${#missing_containers[@]})); then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_containers[@]}"
	# The registry's own service would listen on every address: the tests start theirs on
	# 127.0.0.1.
	if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
		systemctl disable --now docker-registry >/dev/null 2>&1 || true
	fi
fi

if ! command -v cargo >/dev/null && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
	curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt -c clippy
fi

# 3cpio, a peer reader the tests check pack's output against (not packaged in Debian 12).
if ! command -v 3cpio >/dev/null && [[ ! -x $HOME/.cargo/bin/3cpio ]]; then
	"$(command -v cargo || echo "$HOME/.cargo/bin/cargo")" install --locked threecpio
fi
