#!/usr/bin/env bash
# Installs what building and running rootpack needs on Debian/Ubuntu (as root), skipping
# what is already there: the Debian packages, and Rust (by rustup) when cargo is missing.
# With --tests, also the tools the test suite makes its inputs with and checks rootpack's
# outputs against.
#
#   ./scripts/install-deps.sh            # build and run
#   ./scripts/install-deps.sh --tests    # build, run, and `cargo test --release`
set -euo pipefail

tests=false
for arg in "$@"; do
	case $arg in
	--tests) tests=true ;;
	-h | --help)
		echo "usage: $0 [--tests]"
		exit 0
		;;
	*)
		echo "install-deps: unknown argument: $arg (usage: $0 [--tests])" >&2
		exit 2
		;;
	esac
done

# Building rootpack, and what `build` and `run` run.
packages=(
	build-essential pkg-config curl ca-certificates              # building
	e2fsprogs util-linux mount                                   # images: mke2fs, debugfs, losetup
	kmod                                                         # [modules]: depmod, modprobe
	containernetworking-plugins iptables iproute2 slirp4netns    # private networks, -p
)
# The test suite's fixtures and peers.
test_packages=(
	cpio busybox-static initramfs-tools-core python3 bsdutils    # test fixtures and peers
	gcc-multilib                                                 # a 32-bit probe for the i386 filter
	gzip zstd xz-utils bzip2 lz4 lzop                            # every initramfs compression
	qemu-system-x86                                              # a kernel boots what pack writes
	mmdebstrap attr acl libcap2-bin                              # a Debian tree; its xattrs read back
)
# Container images in and out, the peers the tests check outputs with; with their
# recommended packages, which podman needs to run as it does on a desktop.
containers=(podman runc skopeo umoci docker-registry containerd bats)

# Prints the packages of "$@" that are not installed.
missing() {
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
	done
}

mapfile -t missing_packages < <(missing "${packages[@]}")
missing_tests=()
missing_containers=()
if $tests; then
	mapfile -t missing_tests < <(missing "${test_packages[@]}")
	mapfile -t missing_containers < <(missing "${containers[@]}")
fi

# Says what a group needs: "install-deps: GROUP: installing N packages: …" or that it has all.
announce() {
	local group=$1 total=$2
	shift 2
	if (($#)); then
		echo "install-deps: $group: installing $# of $total packages: $*"
	else
		echo "install-deps: $group: all $total packages installed"
	fi
}

if ((${#missing_packages[@]} + ${#missing_tests[@]} + ${#missing_containers[@]})); then
	echo "install-deps: updating the package lists (apt-get update)"
	apt-get update -q
fi
announce "building and running" "${#packages[@]}" "${missing_packages[@]}"
if ((${#missing_packages[@]})); then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_packages[@]}"
fi
if $tests; then
	announce "test tools" "${#test_packages[@]}" "${missing_tests[@]}"
	if ((${#missing_tests[@]})); then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_tests[@]}"
	fi
	announce "container tools for the tests" "${#containers[@]}" "${missing_containers[@]}"
	if ((${#missing_containers[@]})); then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing_containers[@]}"
		# The registry's own service would listen on every address: the tests start theirs on
		# 127.0.0.1.
		if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
			systemctl disable --now docker-registry >/dev/null 2>&1 || true
		fi
	fi
fi

if ! command -v cargo >/dev/null && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
	echo "install-deps: installing Rust with rustup (minimal profile, rustfmt, clippy)"
	curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt -c clippy
else
	echo "install-deps: Rust: cargo installed"
fi

# 3cpio, a peer reader the tests check pack's output against (not packaged in Debian 12).
if $tests; then
	if ! command -v 3cpio >/dev/null && [[ ! -x $HOME/.cargo/bin/3cpio ]]; then
		echo "install-deps: installing 3cpio (cargo install --locked threecpio)"
		"$(command -v cargo || echo "$HOME/.cargo/bin/cargo")" install --locked threecpio
	else
		echo "install-deps: 3cpio installed"
	fi
fi
