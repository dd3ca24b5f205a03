#!/bin/bash
# compare.sh [INITRD]
#
# Benchmark rootpack against public tools (unmkinitramfs/lsinitramfs from
# initramfs-tools, 3cpio, plain zstd) on one initramfs, all in one run on the
# same input and the same disk.
#
# INITRD defaults to /boot/initrd.img-$(uname -r), or, when that is absent, one
# made by make-initrd.sh (a stock Debian initrd where possible; it takes about
# 30 s, so for repeated runs make it once and pass it as INITRD).
#
# Environment:
#   ROOTPACK  binary to test (default: <repo>/target/release/rootpack)
#   RUNS      hyperfine runs per command (default: 10)
#   STAGES    stages to run, in order (default: "extract ls pack frames rss image oci run runtime network cache boot");
#             each stage NAME is a function bench_NAME below; "xattrs" (not by default) needs
#   BASELINE  a rootpack binary from before extended attributes, and DEBIAN_TAR (see bench_xattrs).
set -euo pipefail
export LC_ALL=C
# Builds measure the whole pipeline; the cache stage names its cache itself.
export ROOTPACK_CACHE=off

here=$(cd -- "$(dirname -- "$0")" && pwd)
ROOTPACK=${ROOTPACK:-$here/../target/release/rootpack}
RUNS=${RUNS:-10}
STAGES=${STAGES:-extract ls pack frames rss image oci run runtime network cache boot}

die() { echo "compare.sh: $*" >&2; exit 1; }
[[ -x $ROOTPACK ]] || die "rootpack binary not found: $ROOTPACK (cargo build --release, or set ROOTPACK)"
for tool in hyperfine 3cpio unmkinitramfs lsinitramfs zstd python3 /usr/bin/time; do
	command -v "$tool" >/dev/null || die "missing tool: $tool"
done

work=$(mktemp -d /var/tmp/rootpack-bench.XXXXXX)
trap 'umount -q "$work/fs" 2>/dev/null; rm -rf -- "$work"' EXIT
img=$work/initrd.img out=$work/out
# Outputs go to a fresh journaled ext4 (BENCH_FS=host: the work folder's own filesystem).
# On a filesystem without a journal (like this VM's root), ext4 scans for recently
# deleted inodes on every create, which swamps every tool's timing with noise.
if [[ ${BENCH_FS:-scratch} != host && $(id -u) == 0 ]]; then
	truncate -s 4G "$work/scratch.img" && mkfs.ext4 -q "$work/scratch.img"
	mkdir "$work/fs" && mount -o loop "$work/scratch.img" "$work/fs"
	out=$work/fs/out
fi
rp=$(printf %q "$(realpath -- "$ROOTPACK")")

src=${1:-/boot/initrd.img-$(uname -r)}
if [[ -r $src ]]; then
	cp -- "$src" "$img"
elif [[ $# -eq 0 ]]; then
	"$here/make-initrd.sh" "$img" 2>"$work/make-initrd.log" ||
		die "make-initrd.sh failed: $(cat "$work/make-initrd.log")"
	src=$(tail -n 1 "$work/make-initrd.log")
else
	die "cannot read $src"
fi
echo "input: $src ($(stat -c %s "$img") bytes), workdir: $work"

hf() { # JSON_NAME hyperfine-args...
	local name=$1; shift
	hyperfine --warmup 2 --runs "$RUNS" --export-json "$work/$name.json" "$@"
}

# Write the main (compressed) segment to $work/main.seg: skip the uncompressed
# newc archives at the start (as the kernel and unmkinitramfs do) and print the
# decompressor for what follows.
split_main() {
	python3 - "$img" "$work/main.seg" <<-'EOF'
		import sys
		data = open(sys.argv[1], "rb").read()
		off = 0
		while data[off:off + 6] in (b"070701", b"070702"):
		    namesize = int(data[off + 94:off + 102], 16)
		    filesize = int(data[off + 54:off + 62], 16)
		    name = data[off + 110:off + 109 + namesize]
		    off = (off + 110 + namesize + 3) & ~3
		    off = (off + filesize + 3) & ~3
		    if name == b"TRAILER!!!":
		        while data[off:off + 1] == b"\0":
		            off += 1
		magics = {b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip", b"\xfd7zXZ": "xz", b"\x02\x21\x4c\x18": "lz4"}
		tool = next((t for m, t in magics.items() if data[off:].startswith(m)), None)
		if tool is None:
		    sys.exit("main segment at offset %d: unknown compression" % off)
		open(sys.argv[2], "wb").write(data[off:])
		print(tool)
	EOF
}

# Note: on ext4 without a journal, inodes freed by the "rm -rf" prepare step are
# skipped by the allocator for about a minute, which makes file creation right
# after it slower (and noisier) than on a fresh or journaled filesystem.
bench_extract() {
	local dec
	dec=$(split_main)
	hf extract \
		-n "rootpack extract" -p "rm -rf $out" "$rp extract $img $out" \
		-n "unmkinitramfs" -p "rm -rf $out" "unmkinitramfs $img $out" \
		-n "3cpio -x" -p "rm -rf $out && mkdir $out" "3cpio -x -C $out $img" \
		-n "$dec -dc (floor)" -p "true" "$dec -dc $work/main.seg >/dev/null"
	rm -rf -- "$out" "$work/main.seg"
}

bench_ls() {
	hf ls \
		-n "rootpack ls" "$rp ls $img >/dev/null" \
		-n "lsinitramfs" "lsinitramfs $img >/dev/null" \
		-n "3cpio -t" "3cpio -t $img >/dev/null"
}

# The initrd's tree, extracted once for the stages that start from a tree.
tree_of_initrd() {
	[[ -d $work/tree ]] || "$ROOTPACK" extract -q "$img" "$work/tree"
	echo "$work/tree"
}

# tree -> .cpio.zst: rootpack pack (frames on every core) against the classic pipeline
# with zstd's own threads, at level 9 (mkinitramfs's) and at the default levels (3).
# Sizes are compared with one frame at the same level.
bench_pack() {
	local tree p=$out.cpio.zst c=$out.pipe.cpio.zst
	tree=$(tree_of_initrd)
	local pipe="cd $tree && find . | LC_ALL=C sort | cpio --quiet -o -H newc"
	hf pack \
		-n "rootpack pack --level 9" "$rp pack -q $tree -o $p --level 9" \
		-n "cpio | zstd -9 -T0" "sh -c '$pipe | zstd -q -9 -T0 > $c'" \
		-n "rootpack pack" "$rp pack -q $tree -o $p" \
		-n "cpio | zstd -3 -T0" "sh -c '$pipe | zstd -q -3 -T0 > $c'"
	local level
	for level in 3 9; do
		"$ROOTPACK" pack -q "$tree" -o "$p" --level $level
		printf 'level %s frames\t%s\n' $level "$(stat -c %s "$p")" >>"$work/sizes.tsv"
		"$ROOTPACK" pack -q "$tree" -o "$p" --level $level --frame-size 0
		printf 'level %s one frame\t%s\n' $level "$(stat -c %s "$p")" >>"$work/sizes.tsv"
	done
	rm -f -- "$p" "$c"
}

# Reading rootpack's own pack output (default options: frames), against zstd -dc of it.
bench_frames() {
	local tree own=$work/own.cpio.zst
	tree=$(tree_of_initrd)
	"$ROOTPACK" pack -q "$tree" -o "$own"
	hf frames \
		-n "rootpack extract (own pack)" -p "rm -rf $out" "$rp extract $own $out" \
		-n "rootpack ls (own pack)" "$rp ls $own >/dev/null" \
		-n "zstd -dc (own pack)" "zstd -dc $own >/dev/null"
	rm -rf -- "$out" "$own"
}

rss() { # NAME CMD...: record the peak RSS (KiB) of one run
	local name=$1; shift
	/usr/bin/time -f %M -o "$work/time.out" "$@" >/dev/null
	printf '%s\t%s\n' "$name" "$(<"$work/time.out")" >>"$work/rss.tsv"
}

bench_rss() { # rootpack, and 3cpio for reference (its zstd/gzip child is not
	# counted: 3cpio never waits for it, so neither wait4 nor hyperfine see it)
	rm -rf -- "$out" && rss "rootpack extract" "$ROOTPACK" extract "$img" "$out"
	rm -rf -- "$out" && mkdir "$out" && rss "3cpio -x (excl. decompressor)" 3cpio -x -C "$out" "$img"
	rm -rf -- "$out"
}

# tree -> ext4 image, each path ending with the image synced to disk, on two shapes: the
# initrd's main segment (extracted once; 130 MB of mostly large files) and 50,000 small
# files (200 folders of 250 files of 0-300 bytes, a distribution rootfs's shape).
bench_image() {
	local tree small=$work/small
	tree=$(tree_of_initrd)
	python3 - "$small" <<-'PY'
		import os, random, sys
		random.seed(7)
		for d in range(200):
		    p = os.path.join(sys.argv[1], "d%03d" % d)
		    os.makedirs(p)
		    for f in range(250):
		        with open(os.path.join(p, "f%03d" % f), "wb") as fh:
		            fh.write(random.randbytes(random.randint(0, 300)))
	PY
	chmod -R a+rX "$work"
	image_rows "$tree" image "" && image_rows "$small" image-small "-N 60000"
	rm -rf -- "$small"
}

image_rows() { # TREE STAGE MKFS_EXTRA: rootpack's builds and the manual peers on one tree
	local tree=$1 stage=$2 extra=$3 fs=${out%/out}
	local kib size_mib
	kib=$(du -sk "$tree" | cut -f1)
	size_mib=$((kib * 13 / 10 / 1024 + 64))
	# The default method (auto), the reproducible one (a source date epoch selects
	# populate), and the same reproducible build without root (nobody, through setpriv).
	printf 'name = "tree"\n[[layer]]\ndir = "%s"\n' "$tree" >"$work/tree.toml"
	printf 'name = "tree"\nsource_date_epoch = 1700000000\n[[layer]]\ndir = "%s"\n' "$tree" >"$work/repro.toml"
	mkdir -p "$fs/nobody" && chown 65534:65534 "$fs/nobody" && chmod a+rx "$fs" "$work"
	local i=$fs/img.ext4 m=$work/mnt
	mkdir -p "$m"
	hf "$stage" \
		-n "rootpack build" -p "rm -f $fs/tree.*" "$rp build -q $work/tree.toml --out $fs" \
		-n "rootpack build (reproducible)" -p "rm -f $fs/tree.*" "$rp build -q $work/repro.toml --out $fs" \
		-n "rootpack build (reproducible, rootless)" -p "rm -f $fs/nobody/tree.*" \
		"setpriv --reuid 65534 --regid 65534 --clear-groups -- $rp build -q $work/repro.toml --out $fs/nobody" \
		-n "dd+mkfs+mount+cp" -p "rm -f $i" \
		"dd if=/dev/zero of=$i bs=1M count=$size_mib status=none && mkfs.ext4 -q -F $extra $i && mount -o loop $i $m && cp -a $tree/. $m/ && umount $m && sync $i" \
		-n "truncate+mkfs+mount+cp" -p "rm -f $i" \
		"truncate -s ${size_mib}M $i && mkfs.ext4 -q -F $extra $i && mount -o loop $i $m && cp -a $tree/. $m/ && umount $m && sync $i" \
		-n "mke2fs -d" -p "rm -f $i" \
		"mke2fs -q -F -t ext4 $extra -d $tree $i ${size_mib}M && sync $i"
	rm -rf -- "$i" "$fs"/tree.* "$fs/nobody"
}

# Container images, on the initrd's tree: an OCI archive of it (one gzip layer, written by
# rootpack) to an ext4 image, against umoci unpack + mke2fs -d of the same archive (as a
# layout); and writing the archive, against tar | gzip -6 of the tree.
bench_oci() {
	local tree fs=${out%/out}
	tree=$(tree_of_initrd)
	local kib size_mib
	kib=$(du -sk "$tree" | cut -f1)
	size_mib=$((kib * 13 / 10 / 1024 + 64))
	printf 'name = "tree"\nsource_date_epoch = 1700000000\n[[layer]]\ndir = "%s"\n[output]\nformat = "oci-archive"\n' "$tree" >"$work/oci-out.toml"
	"$ROOTPACK" build -q "$work/oci-out.toml" --out "$work/oci"
	mkdir -p "$work/layout" && tar -xf "$work/oci/tree.oci.tar" -C "$work/layout"
	printf 'name = "fromoci"\n[[layer]]\noci = "%s"\n' "$work/oci/tree.oci.tar" >"$work/oci-in.toml"
	local i=$fs/img.ext4 b=$fs/bundle
	hf oci \
		-n "rootpack build ext4 from oci-archive" -p "rm -f $fs/fromoci.*" "$rp build -q $work/oci-in.toml --out $fs" \
		-n "umoci unpack + mke2fs -d" -p "rm -rf $b $i" \
		"umoci unpack --image $work/layout:tree:latest $b >/dev/null && mke2fs -q -F -t ext4 -d $b/rootfs $i ${size_mib}M && sync $i" \
		-n "rootpack build oci-archive" -p "rm -f $fs/tree.*" "$rp build -q $work/oci-out.toml --out $fs" \
		-n "tar | gzip -6" -p "rm -f $fs/tree.tar.gz" "tar -C $tree -cf - . | gzip -6 >$fs/tree.tar.gz && sync $fs/tree.tar.gz"
	rm -rf -- "$work/oci" "$work/layout" "$b" "$i" "$fs"/tree.* "$fs"/fromoci.*
}

# Start-to-exit of /bin/true on the same busybox tree: rootpack from its ext4 image
# (attach + mount included), crun and runc on an OCI bundle, bwrap and unshare+chroot on
# the folder. crun refuses the hybrid cgroup layout, so it runs in a mount namespace
# without the cgroup2 mount.
bench_run() {
	local b=$work/bundle runs=${RUN_RUNS:-100}
	"$ROOTPACK" build -q "$here/../recipes/busybox.toml" --out "$work/bb"
	mkdir -p "$b" && (cd "$b" && runc spec)
	mkdir -p "$work/bbm" && mount -o ro,loop "$work/bb/busybox.ext4" "$work/bbm"
	mkdir -p "$b/rootfs" && cp -a "$work/bbm/." "$b/rootfs/"
	umount "$work/bbm"
	python3 - "$b/config.json" <<-'PY'
		import json, sys
		c = json.load(open(sys.argv[1]))
		c["process"]["terminal"] = False
		c["process"]["args"] = ["/bin/true"]
		json.dump(c, open(sys.argv[1], "w"))
	PY
	local r=$b/rootfs
	hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/run.json" \
		-n "rootpack run" "$rp run $work/bb/busybox.ext4 -- /bin/true" \
		-n "rootpack run (unconfined)" "$rp run --security-opt seccomp=unconfined $work/bb/busybox.ext4 -- /bin/true" \
		-n "rootpack run --no-init" "$rp run --no-init $work/bb/busybox.ext4 -- /bin/true" \
		-n "crun run" "unshare -m sh -c 'umount /sys/fs/cgroup/unified; crun run --bundle $b rp-bench-crun'" \
		-n "runc run" "runc run --bundle $b rp-bench-runc" \
		-n "bwrap" "bwrap --unshare-all --ro-bind $r / --proc /proc --dev /dev /bin/true" \
		-n "unshare+chroot" "unshare --fork --pid --mount --uts --ipc --net chroot $r /bin/true"
	# hyperfine's stdout is /dev/null above, which rootpack relays through a pipe (the
	# container never gets the caller's file or device); a pipe is passed as it is.
	hyperfine -N --warmup 5 --runs "$runs" --output=pipe --export-json "$work/run-pipe.json" \
		-n "rootpack run (stdout a pipe)" "$rp run $work/bb/busybox.ext4 -- /bin/true"
	rm -rf -- "$b" "$work/bb" "$work/bbm"
}

# The OCI runtime as engines use it: podman's `run --rm` of /bin/true with
# rootpack-runtime and with runc (private vfs storage), and an exec of /bin/true into a
# running container: rootpack-runtime's and runc's into their own (same bundle), and
# `rootpack exec` into a `run -d` container.
bench_runtime() {
	local runs=${RUNTIME_RUNS:-20} b=$work/rtbundle rt=$(dirname "$ROOTPACK")/rootpack-runtime
	local st=$work/podman-store
	"$ROOTPACK" build -q "$here/../recipes/busybox.toml" --out "$work/rtbb"
	mkdir -p "$b/rootfs" "$work/rtm" && (cd "$b" && runc spec)
	mount -o ro,loop "$work/rtbb/busybox.ext4" "$work/rtm"
	cp -a "$work/rtm/." "$b/rootfs/" && umount "$work/rtm"
	python3 - "$b/config.json" <<-'PY'
		import json, sys
		c = json.load(open(sys.argv[1]))
		c["process"]["terminal"] = False
		c["process"]["args"] = ["/bin/sleep", "1000"]
		json.dump(c, open(sys.argv[1], "w"))
	PY
	local p="podman --root $st/root --runroot $st/run --storage-driver vfs --cgroup-manager cgroupfs"
	local lim="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
	tar -C "$b/rootfs" -cf "$work/rt.tar" .
	$p import -q "$work/rt.tar" localhost/rp-bench:1 >/dev/null
	hyperfine -N --warmup 2 --runs "$runs" --export-json "$work/runtime.json" \
		-n "podman run (rootpack-runtime)" "$p --runtime $rt run --rm $lim localhost/rp-bench:1 /bin/true" \
		-n "podman run (runc)" "$p --runtime runc run --rm $lim localhost/rp-bench:1 /bin/true"
	"$rt" create --bundle "$b" rp-bench-exec </dev/null >/dev/null 2>&1 && "$rt" start rp-bench-exec
	runc create --bundle "$b" rp-bench-exec-runc </dev/null >/dev/null 2>&1 && runc start rp-bench-exec-runc
	"$ROOTPACK" run -d --name rp-bench-exec "$work/rtbb/busybox.ext4" sleep 1000 >/dev/null
	hyperfine -N --warmup 5 --runs "${RUN_RUNS:-100}" --export-json "$work/exec.json" \
		-n "rootpack-runtime exec" "$rt exec rp-bench-exec /bin/true" \
		-n "runc exec" "runc exec rp-bench-exec-runc /bin/true" \
		-n "rootpack exec" "$ROOTPACK exec rp-bench-exec /bin/true"
	"$rt" delete -f rp-bench-exec
	runc delete -f rp-bench-exec-runc
	"$ROOTPACK" rm -f rp-bench-exec >/dev/null
	$p rmi -f localhost/rp-bench:1 >/dev/null
	rm -rf -- "$b" "$work/rtbb" "$work/rtm" "$work/rt.tar" "$st"
}

# Networks, in a network namespace of the stage's own (every bridge, rule and address goes
# with it, and traffic stays on 127.0.0.1): start-to-exit of /bin/true with no network, the
# private one and a published port, against podman's bridge network (runc); and 1 GiB
# downloaded through a published port from busybox httpd, through rootpack's and podman's.
bench_network() {
	local runs=${NET_RUNS:-20} st=$work/net-podman
	"$ROOTPACK" build -q "$here/../recipes/busybox.toml" --out "$work/nbb"
	mkdir -p "$work/nbm" "$work/nroot" && mount -o ro,loop "$work/nbb/busybox.ext4" "$work/nbm"
	cp -a "$work/nbm/." "$work/nroot/" && umount "$work/nbm"
	truncate -s 1G "$work/big"
	local p="podman --root $st/root --runroot $st/run --storage-driver vfs --cgroup-manager cgroupfs --runtime runc"
	local lim="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
	local img=$work/nbb/busybox.ext4 serve="busybox httpd -f -p 80 -h /www"
	tar -C "$work/nroot" -cf "$work/nroot.tar" .
	$p import -q "$work/nroot.tar" localhost/rp-net:1 >/dev/null
	unshare --net --mount bash -euo pipefail -c "
		ip link set lo up
		mkdir -p /run/rootpack-net && mount -t tmpfs tmpfs /run/rootpack-net
		hyperfine -N --warmup 3 --runs $runs --export-json $work/network.json \
			-n 'rootpack run --network none' '$rp run $img /bin/true' \
			-n 'rootpack run --network private' '$rp run --network private $img /bin/true' \
			-n 'rootpack run -p 18080:80' '$rp run -p 18080:80 $img /bin/true' \
			-n 'podman run --network bridge (runc)' '$p run --rm --network bridge $lim localhost/rp-net:1 /bin/true' \
			-n 'podman run -p 18081:80 (runc)' '$p run --rm -p 18081:80 $lim localhost/rp-net:1 /bin/true'
		# The same memory limit for both servers (the image's own 64M would make the page
		# cache of the file rootpack's bottleneck).
		$rp run -d --name rp-bench-net --memory 2G -p 18090:80 -v $work/big:/www/big:ro $img $serve >/dev/null
		$p run -d --name rp-bench-net --memory 2g -p 18091:80 -v $work/big:/www/big:ro $lim localhost/rp-net:1 $serve >/dev/null
		sleep 1
		hyperfine -N --warmup 1 --runs 5 --export-json $work/network-download.json \
			-n '1 GiB through rootpack -p' 'busybox wget -q -O /dev/null http://127.0.0.1:18090/big' \
			-n '1 GiB through podman -p (runc)' 'busybox wget -q -O /dev/null http://127.0.0.1:18091/big'
		$rp rm -f rp-bench-net >/dev/null
		$p rm -f rp-bench-net >/dev/null
	"
	$p rmi -f localhost/rp-net:1 >/dev/null
	rm -rf -- "$work/nbb" "$work/nbm" "$work/nroot" "$work/nroot.tar" "$work/big" "$st"
}

# The build cache on the initrd's tree as a tar layer, with two steps of real work (a
# compression and a listing with checksums, a few seconds between them, as a package
# installation would take) and a [[file]] placed after them: the first build with an empty
# cache against --no-cache, the rebuild after that file changed against the full build and
# against podman build's cached rebuild of the same Containerfile, and a no-op rebuild.
bench_cache() {
	local tree c=$work/cache-bench fs=${out%/out} runs=${CACHE_RUNS:-3}
	tree=$(tree_of_initrd)
	mkdir -p "$c/ctx"
	tar -C "$tree" -cf "$c/ctx/base.tar" .
	cp /bin/busybox "$c/ctx/busybox"
	echo 1 >"$c/ctx/motd"
	local one="/opt/busybox tar -cf - /usr | /opt/busybox gzip -1 > /step1.tgz"
	local two="/opt/busybox find / -xdev -type f | /opt/busybox sort | /opt/busybox xargs /opt/busybox sha256sum > /step2.sums"
	cat >"$c/ctx/r.toml" <<-EOF2
		name = "cached"
		source_date_epoch = 1700000000
		[[layer]]
		tar = "base.tar"
		[[binary]]
		path = "$c/ctx/busybox"
		to = "/opt/busybox"
		[[run]]
		args = ["/opt/busybox", "sh", "-c", "$one"]
		[[run]]
		args = ["/opt/busybox", "sh", "-c", "$two"]
		[[file]]
		to = "/etc/motd"
		from = "motd"
		after_steps = true
	EOF2
	cat >"$c/ctx/Containerfile" <<-EOF2
		FROM scratch
		ADD base.tar /
		COPY busybox /opt/busybox
		RUN ["/opt/busybox", "sh", "-c", "$one"]
		RUN ["/opt/busybox", "sh", "-c", "$two"]
		COPY motd /etc/motd
	EOF2
	local p="podman --root $fs/podman/root --runroot $work/podman-run --cgroup-manager cgroupfs --runtime runc"
	local pb="$p build -q --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 -t rp-cache -f $c/ctx/Containerfile $c/ctx"
	local b="$rp build -q $c/ctx/r.toml --out $fs/cout"
	local touch="date +%s%N > $c/ctx/motd"
	$pb >/dev/null
	hyperfine --warmup 1 --runs "$runs" --export-json "$work/cache.json" \
		-n "build --no-cache" -p "rm -rf $fs/cout" "$b --no-cache" \
		-n "build, cache empty" -p "rm -rf $fs/cout $fs/cache" "$b --cache $fs/cache" \
		-n "rebuild after a [[file]]" -p "$touch" "$b --cache $fs/cache" \
		-n "podman build, cached, after a COPY" -p "$touch" "$pb"
	hyperfine -N --warmup 3 --runs 20 --export-json "$work/cache-noop.json" \
		-n "no-op rebuild" "$b --cache $fs/cache"
	$p rmi -a -f >/dev/null 2>&1 || true
	# podman leaves its storage's overlay folder mounted; the scratch filesystem must unmount.
	umount -q "$fs/podman/root/overlay" 2>/dev/null || true
	rm -rf -- "$c" "$fs/cout" "$fs/cache" "$fs/podman" "$work/podman-run"
}

# Time from boot to the guest's command, under TCG: the busybox image with an /sbin/init
# that powers off at once, booted by rootpack with the boot-initramfs recipe's initramfs
# (pc and microvm, and with a command instead of the init), against the same qemu line
# run by hand with the Debian initrd this script measures (mkinitramfs's, MODULES=most).
# The kernel and its modules are those of the initrd: from /boot and /lib/modules, or
# from the kernel package, downloaded and unpacked (never installed).
bench_boot() {
	local b=$work/boot release k root runs=${BOOT_RUNS:-5}
	mkdir -p "$b"
	release=$("$ROOTPACK" ls "$img" | sed -n 's|^\(usr/\)\{0,1\}lib/modules/\([^/]*\)/.*|\2|p' | sort -u | tail -n 1)
	[[ -n $release ]] || die "boot: no lib/modules/RELEASE in $img"
	k=/boot/vmlinuz-$release root=/
	if [[ ! -r $k || ! -d /lib/modules/$release ]]; then
		(cd "$b" && apt-get download -q "linux-image-$release" >/dev/null 2>&1) ||
			die "boot: cannot download linux-image-$release"
		dpkg -x "$b"/linux-image-*.deb "$b/pkg"
		k=$b/pkg/boot/vmlinuz-$release root=$b/pkg
	fi
	sed "s|kernel = \"{latest}\"|kernel = \"$root\"|" "$here/../recipes/boot-initramfs.toml" >"$b/boot-initramfs.toml"
	cp "$here/../recipes/boot-init.sh" "$b/"
	sed 's/^name = "busybox"/name = "guest"/' "$here/../recipes/busybox.toml" >"$b/guest.toml"
	printf '\n[[file]]\nto = "/sbin/init"\nmode = "0755"\ncontent = "#!/bin/sh\\necho GUEST; /bin/busybox poweroff -f\\n"\n' >>"$b/guest.toml"
	"$ROOTPACK" build -q "$b/boot-initramfs.toml" --out "$b/images"
	"$ROOTPACK" build -q "$b/guest.toml" --out "$b/images"
	local i=$b/images/guest.ext4 q="qemu-system-x86_64 -nodefaults -no-user-config -no-reboot -display none"
	q+=" -machine pc -accel tcg -cpu max -m 512 -smp 1 -serial stdio -monitor none -kernel $k"
	q+=" -drive file=$i,format=raw,if=none,id=root,snapshot=on -device virtio-blk-pci,drive=root"
	local boot="$rp boot --accel tcg --kernel $k $i"
	hyperfine --warmup 1 --runs "$runs" --export-json "$work/boot.json" \
		-n "rootpack boot (pc)" "$boot" \
		-n "rootpack boot (microvm)" "$boot --machine microvm" \
		-n "rootpack boot -- true" "$boot -- true" \
		-n "qemu with Debian's initrd" \
		"$q -initrd $img -append 'console=ttyS0 root=/dev/vda ro panic=-1 quiet'"
	ls -l "$img" "$b/images/boot-initramfs.cpio.zst" | awk '{print "initramfs size", $5, $NF}'
	rm -rf -- "$b"
}

# What extended attributes cost: the same builds by this binary and by BASELINE (a build
# from before attributes were read and written), on the initrd's tree and on a Debian tree
# made by mmdebstrap (DEBIAN_TAR, as the tests make it), whose ping carries a capability:
# a reproducible ext4 from the folder, and a tar from the Debian tarball.
bench_xattrs() {
	[[ -x ${BASELINE:-} ]] || die "xattrs: set BASELINE to a rootpack binary without attribute support"
	local tree deb=${DEBIAN_TAR:-/var/tmp/rootpack-test-debian/bookworm-minbase-ping-passwd.tar}
	local fs=${out%/out} base
	[[ -r $deb ]] || die "xattrs: no Debian tarball at $deb (mmdebstrap --variant=minbase --include=iputils-ping,passwd bookworm $deb)"
	tree=$(tree_of_initrd)
	base=$(printf %q "$(realpath -- "$BASELINE")")
	printf 'name = "tree"\nsource_date_epoch = 1700000000\n[[layer]]\ndir = "%s"\n' "$tree" >"$work/x-tree.toml"
	printf 'name = "deb"\nsource_date_epoch = 1700000000\n[[layer]]\ntar = "%s"\n' "$deb" >"$work/x-deb.toml"
	printf 'name = "debtar"\nsource_date_epoch = 1700000000\n[[layer]]\ntar = "%s"\n[output]\nformat = "tar"\n' "$deb" >"$work/x-debtar.toml"
	hf xattrs \
		-n "initrd ext4 (xattrs)" -p "rm -f $fs/tree.*" "$rp build -q $work/x-tree.toml --out $fs" \
		-n "initrd ext4 (baseline)" -p "rm -f $fs/tree.*" "$base build -q $work/x-tree.toml --out $fs" \
		-n "debian ext4 (xattrs)" -p "rm -f $fs/deb.*" "$rp build -q $work/x-deb.toml --out $fs" \
		-n "debian ext4 (baseline)" -p "rm -f $fs/deb.*" "$base build -q $work/x-deb.toml --out $fs" \
		-n "debian tar (xattrs)" -p "rm -f $fs/debtar.*" "$rp build -q $work/x-debtar.toml --out $fs" \
		-n "debian tar (baseline)" -p "rm -f $fs/debtar.*" "$base build -q $work/x-debtar.toml --out $fs"
	rm -f -- "$fs"/tree.* "$fs"/deb.* "$fs"/debtar.*
}

for stage in $STAGES; do
	declare -F "bench_$stage" >/dev/null || die "unknown stage: $stage"
	echo "=== $stage"
	# Write back what earlier stages left dirty, so it does not bleed into this one's timings.
	sync
	"bench_$stage"
done

python3 - "$work" $STAGES <<-'EOF'
	import json, os, sys
	work, stages = sys.argv[1], sys.argv[2:]
	median = {}
	print("\n%-46s %10s %10s %10s %10s" % ("command", "median s", "mean s", "p95 s", "stddev s"))
	# The image stage has a second shape of tree; its rows are prefixed "small: ".
	files = [(s, "") for s in stages] + [("image-small", "small: ")] * ("image" in stages)
	files += [("run-pipe", "")] * ("run" in stages)
	files += [("exec", "")] * ("runtime" in stages)
	files += [("network-download", "")] * ("network" in stages)
	files += [("cache-noop", "")] * ("cache" in stages)
	for stage, prefix in files:
	    path = os.path.join(work, stage + ".json")
	    for r in json.load(open(path))["results"] if os.path.exists(path) else []:
	        name = prefix + r["command"]
	        median[name] = r["median"]
	        t = sorted(r["times"])
	        p95 = t[min(len(t) - 1, int(len(t) * 0.95))]
	        print("%-46s %10.4f %10.4f %10.4f %10.4f" % (name, r["median"], r["mean"], p95, r["stddev"] or 0))
	floor = next((c for c in median if c.endswith("(floor)")), None)
	pairs = [("rootpack / 3cpio", "rootpack extract", "3cpio -x"),
	         ("rootpack / unmkinitramfs", "rootpack extract", "unmkinitramfs"),
	         ("rootpack / decompress floor", "rootpack extract", floor),
	         ("rootpack ls / 3cpio -t", "rootpack ls", "3cpio -t"),
	         ("rootpack ls / lsinitramfs", "rootpack ls", "lsinitramfs"),
	         ("pack -9 / cpio|zstd -9 -T0", "rootpack pack --level 9", "cpio | zstd -9 -T0"),
	         ("pack / cpio|zstd -3 -T0", "rootpack pack", "cpio | zstd -3 -T0"),
	         ("extract own / zstd -dc own", "rootpack extract (own pack)", "zstd -dc (own pack)"),
	         ("ls own / zstd -dc own", "rootpack ls (own pack)", "zstd -dc (own pack)"),
	         ("rootpack build / mke2fs -d", "rootpack build", "mke2fs -d"),
	         ("rootpack build / truncate path", "rootpack build", "truncate+mkfs+mount+cp"),
	         ("rootpack build / dd path", "rootpack build", "dd+mkfs+mount+cp"),
	         ("reproducible build / mke2fs -d", "rootpack build (reproducible)", "mke2fs -d"),
	         ("rootless reproducible / mke2fs -d", "rootpack build (reproducible, rootless)", "mke2fs -d"),
	         ("small: build / mke2fs -d", "small: rootpack build", "small: mke2fs -d"),
	         ("small: build / truncate path", "small: rootpack build", "small: truncate+mkfs+mount+cp"),
	         ("small: reproducible / mke2fs -d", "small: rootpack build (reproducible)", "small: mke2fs -d"),
	         ("small: rootless repro / mke2fs -d", "small: rootpack build (reproducible, rootless)", "small: mke2fs -d"),
	         ("ext4 from OCI / umoci + mke2fs", "rootpack build ext4 from oci-archive", "umoci unpack + mke2fs -d"),
	         ("oci-archive / tar | gzip -6", "rootpack build oci-archive", "tar | gzip -6"),
	         ("rootpack run / crun", "rootpack run", "crun run"),
	         ("seccomp filter / unconfined", "rootpack run", "rootpack run (unconfined)"),
	         ("sealed init / --no-init", "rootpack run", "rootpack run --no-init"),
	         ("stdout relayed / a pipe", "rootpack run", "rootpack run (stdout a pipe)"),
	         ("rootpack run / runc", "rootpack run", "runc run"),
	         ("rootpack run / bwrap", "rootpack run", "bwrap"),
	         ("podman: rootpack-runtime / runc", "podman run (rootpack-runtime)", "podman run (runc)"),
	         ("runtime exec / runc exec", "rootpack-runtime exec", "runc exec"),
	         ("rootpack exec / runc exec", "rootpack exec", "runc exec"),
	         ("boot: rootpack / Debian initrd", "rootpack boot (pc)", "qemu with Debian's initrd"),
	         ("boot: microvm / pc", "rootpack boot (microvm)", "rootpack boot (pc)"),
	         ("boot: a command / the init", "rootpack boot -- true", "rootpack boot (pc)"),
	         ("cache: first build / --no-cache", "build, cache empty", "build --no-cache"),
	         ("cache: after a file / full build", "rebuild after a [[file]]", "build --no-cache"),
	         ("cache: after a file / podman", "rebuild after a [[file]]", "podman build, cached, after a COPY"),
	         ("xattrs: initrd ext4 / baseline", "initrd ext4 (xattrs)", "initrd ext4 (baseline)"),
	         ("xattrs: debian ext4 / baseline", "debian ext4 (xattrs)", "debian ext4 (baseline)"),
	         ("xattrs: debian tar / baseline", "debian tar (xattrs)", "debian tar (baseline)")]
	print()
	for label, a, b in pairs:
	    if a in median and b in median:
	        print("%-28s %6.2fx (median)" % (label, median[a] / median[b]))
	sizes = os.path.join(work, "sizes.tsv")
	if os.path.exists(sizes):
	    size = dict(line.rstrip("\n").split("\t") for line in open(sizes))
	    print()
	    for level in ("3", "9"):
	        frames, one = size.get("level %s frames" % level), size.get("level %s one frame" % level)
	        if frames and one:
	            print("size at level %s: frames / one frame %6.4fx (%s / %s bytes)" % (level, int(frames) / int(one), frames, one))
	rss = os.path.join(work, "rss.tsv")
	if os.path.exists(rss):
	    print()
	    for line in open(rss):
	        name, kib = line.rstrip("\n").split("\t")
	        print("peak RSS %-30s %8.1f MiB" % (name, int(kib) / 1024))
EOF
