#!/usr/bin/env bash
# podman's own system tests (test/system/*.bats from Debian's libpod source package) with
# podman driving an OCI runtime: rootpack-runtime by default, or the one given, so the
# two can be compared on the same host:
#
#   scripts/podman-system-tests.sh                       # target/release/rootpack-runtime
#   scripts/podman-system-tests.sh --runtime runc        # the reference
#   scripts/podman-system-tests.sh 030-run 075-exec      # some files only
#
# Runs as root with its own storage, containers.conf and state, all under a temporary
# folder; podman's test image (quay.io/libpod/testimage:20220615) is stood in for by a
# busybox-static tree imported with the same CMD and WORKDIR. Needs podman, bats and
# busybox-static; the libpod source is downloaded once (a deb-src line for bookworm is
# given to apt for that download alone) into $ROOTPACK_CACHE (default /var/cache/rootpack).
set -euo pipefail
cd "$(dirname "$0")/.."

runtime="$PWD/target/release/rootpack-runtime"
if [[ ${1:-} == --runtime ]]; then
	runtime=$2
	shift 2
fi
files=("$@")
if ((${#files[@]} == 0)); then
	files=(030-run 035-logs 040-ps 045-start 050-stop 055-rm 075-exec 080-pause 130-kill)
fi

cache=${ROOTPACK_CACHE:-/var/cache/rootpack}/libpod
if [[ ! -d $cache/test/system ]]; then
	apt_dir=$(mktemp -d)
	trap 'rm -rf "$apt_dir"' EXIT
	mkdir -p "$apt_dir/lists/partial" "$cache"
	echo "deb-src http://deb.debian.org/debian bookworm main" >"$apt_dir/src.list"
	opts=(-o "Dir::Etc::SourceList=$apt_dir/src.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$apt_dir/lists")
	apt-get "${opts[@]}" update -qq
	(cd "$apt_dir" && apt-get "${opts[@]}" source --download-only -qq libpod 2>/dev/null)
	tar -xf "$apt_dir"/libpod_*.orig.tar.xz -C "$cache" --strip-components=1
fi

work=$(mktemp -d)
cleanup() {
	podman_cmd system reset -f >/dev/null 2>&1 || true
	umount -R "$work" 2>/dev/null || true
	rm -rf "$work"
}
cat >"$work/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$work/root"
runroot = "$work/run"
EOF
# This host's root cannot raise its limits past what podman asks by default.
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$work/tmp"
volume_path = "$work/volumes"
EOF
cat >"$work/podman" <<EOF
#!/bin/sh
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"
exec podman --runtime "$runtime" "\$@"
EOF
chmod +x "$work/podman"
podman_cmd() { "$work/podman" "$@"; }
trap cleanup EXIT

# The test image: busybox with the CMD and WORKDIR of quay.io/libpod/testimage.
tree="$work/tree"
mkdir -p "$tree/bin" "$tree/home/podman" "$tree/etc"
cp /bin/busybox "$tree/bin/busybox"
for applet in $(/bin/busybox --list); do
	[[ -e $tree/bin/$applet ]] || ln -s busybox "$tree/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$tree/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$tree/etc/group"
tar -C "$tree" -cf "$work/tree.tar" .
podman_cmd import -q \
	--change 'CMD ["/bin/echo","This container is intended for podman CI testing"]' \
	--change 'WORKDIR /home/podman' \
	"$work/tree.tar" quay.io/libpod/testimage:20220615 >/dev/null

paths=()
for f in "${files[@]}"; do
	paths+=("$cache/test/system/${f%.bats}.bats")
done
echo "podman system tests with --runtime $runtime: ${files[*]}"
status=0
PODMAN="$work/podman" bats --tap "${paths[@]}" | tee "$work/tap" || status=$?
passed=$(grep '^ok ' "$work/tap" | grep -vc '# skip' || true)
skipped=$(grep -c '^ok .*# skip' "$work/tap" || true)
failed=$(grep -c '^not ok ' "$work/tap" || true)
echo "passed $passed, failed $failed, skipped $skipped"
exit "$status"
