#!/bin/bash
# make-initrd.sh OUT.img [TREE_DIR]
#
# Produce a Debian initramfs to benchmark against, the best available of:
#
# 1. /boot/initrd.img-$(uname -r), copied (a real initrd of this host);
# 2. a stock Debian initrd: the distribution's current kernel package
#    (linux-image-amd64's dependency, fetched with apt-get download and unpacked
#    with dpkg -x, never installed) run through the host's mkinitramfs with
#    MODULES=most and COMPRESS=zstd, Debian's defaults. mkinitramfs only looks in
#    /lib/modules and /boot, so it runs in a private mount namespace where the
#    unpacked package is overlaid on them; the host is not touched. On Debian 12
#    this gives ~1400 entries, ~31 MB of zstd -9 for ~130 MB: the input the
#    performance targets are stated for. Needs root, apt and initramfs-tools;
#    MAKE_INITRD_KERNEL=PACKAGE picks another kernel package;
# 3. a synthetic one (below), with MAKE_INITRD_SYNTHETIC=1 or when 2 is not
#    possible.
#
# The synthetic tree is roughly 130 MB / 1400 entries (merged-usr
# layout, static busybox plus applet links, the initramfs-tools init scripts,
# and files copied from the host's /usr/lib/x86_64-linux-gnu and /usr/share,
# picked in sorted order until the targets are reached) and packed the way
# initramfs-tools does it with COMPRESS=zstd:
#
#   early segment: uncompressed newc cpio with kernel/x86/microcode/GenuineIntel.bin
#   main segment:  find . | sort | cpio -o -H newc -R 0:0 | zstd -q -1 -T0
#
# The output is deterministic for a given host: file selection is sorted, all
# timestamps are set to SOURCE_DATE_EPOCH and cpio runs with --reproducible
# (as mkinitramfs does).  If TREE_DIR is given (must be empty or absent) the
# unpacked main tree is kept there.
#
# Tunables (environment): INITRD_BYTES (upper bound on file data, default
# 130 MiB), INITRD_ENTRIES (default 1400), SOURCE_DATE_EPOCH (default 1700000000).
set -euo pipefail
export LC_ALL=C
umask 022

usage() { echo "usage: $0 OUT.img [TREE_DIR]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
out=$1
tree_dir=${2:-}

host_initrd=/boot/initrd.img-$(uname -r)
if [[ -z ${MAKE_INITRD_SYNTHETIC:-} && -r $host_initrd ]]; then
	[[ -z $tree_dir ]] || echo "$0: using $host_initrd, no tree written to $tree_dir" >&2
	cp -- "$host_initrd" "$out"
	exit 0
fi

# Prints the kernel package to use, or nothing when a Debian initrd cannot be made here.
debian_kernel_package() {
	[[ $(id -u) == 0 && -d /boot ]] || return 0
	for tool in apt-get apt-cache dpkg depmod mkinitramfs unshare; do
		command -v "$tool" >/dev/null || return 0
	done
	if [[ -n ${MAKE_INITRD_KERNEL:-} ]]; then
		echo "$MAKE_INITRD_KERNEL"
	else
		apt-cache depends linux-image-amd64 2>/dev/null |
			awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
	fi
}

# A subshell, so the work folder goes however it ends (an interrupt included); every step
# checks its status, as errexit does not apply where the caller tests the result.
debian_initrd() ( # PACKAGE OUT
	pkg=$1 out=$2
	work=$(mktemp -d "${TMPDIR:-/var/tmp}/make-initrd.XXXXXX") || exit 1
	trap 'rm -rf -- "$work"' EXIT
	trap 'exit 130' INT TERM
	fail() { echo "$0: $1 (log: $(tail -n 3 "$work/log" | tr '\n' ' '))" >&2; exit 1; }
	(cd "$work" && apt-get download -q "$pkg") >"$work/log" 2>&1 || fail "apt-get download $pkg failed"
	root=$work/root
	dpkg -x "$work"/*.deb "$root" >>"$work/log" 2>&1 || fail "dpkg -x failed"
	version=$(ls "$root/boot" | sed -n 's/^vmlinuz-//p' | head -n 1)
	modules=$root/lib
	[[ -d $root/usr/lib/modules ]] && modules=$root/usr/lib
	[[ -n $version && -d $modules/modules/$version ]] || fail "no modules in $pkg"
	depmod -b "${modules%/lib}" "$version" >>"$work/log" 2>&1 || fail "depmod failed"
	# The host's configuration, with Debian's defaults for what the benchmark depends on
	# (conf.d is read last, so host settings there cannot override these).
	cp -r /etc/initramfs-tools "$work/conf" && mkdir -p "$work/conf/conf.d" &&
		printf 'MODULES=most\nCOMPRESS=zstd\n' >"$work/conf/conf.d/zz-bench" || fail "no configuration"
	unshare -m sh -euc '
		mount --make-rprivate /
		mount -t overlay overlay -o "lowerdir=$1:/usr/lib" /usr/lib
		mount --bind "$2/boot" /boot
		mkinitramfs -d "$3/conf" -o "$4" "$5"' \
		sh "$modules" "$root" "$work" "$out" "$version" >>"$work/log" 2>&1 || fail "mkinitramfs failed"
)

if [[ -z ${MAKE_INITRD_SYNTHETIC:-} ]]; then
	pkg=$(debian_kernel_package)
	if [[ -n $pkg ]]; then
		[[ -z $tree_dir ]] || echo "$0: using a Debian initrd, no tree written to $tree_dir" >&2
		if debian_initrd "$pkg" "$(realpath -m -- "$out")"; then
			echo "$out: Debian initrd of $pkg" >&2
			exit 0
		fi
		echo "$0: could not make a Debian initrd of $pkg; building a synthetic one" >&2
	fi
fi

target_bytes=${INITRD_BYTES:-$((130 * 1024 * 1024))}
target_entries=${INITRD_ENTRIES:-1400}
epoch=${SOURCE_DATE_EPOCH:-1700000000}
libdir=/usr/lib/x86_64-linux-gnu
sharedir=/usr/share
busybox=/bin/busybox

for tool in cpio zstd openssl; do
	command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done
[[ -x $busybox ]] || { echo "$0: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/make-initrd.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
if [[ -n $tree_dir ]]; then
	mkdir -p -- "$tree_dir"
	[[ -z $(ls -A -- "$tree_dir") ]] || { echo "$0: $tree_dir is not empty" >&2; exit 1; }
	tree=$(cd -- "$tree_dir" && pwd)
else
	tree=$work/tree
	mkdir "$tree"
fi
out=$(realpath -m -- "$out")

# --- skeleton: merged-usr layout, busybox, init scripts, config -------------
cd "$tree"
mkdir -p usr/bin usr/sbin usr/lib64 "usr/lib/${libdir##*/}" usr/lib/modules usr/share \
	conf/conf.d etc/ld.so.conf.d etc/modprobe.d run var/lib/dhcp
ln -s usr/bin bin
ln -s usr/lib lib
ln -s usr/lib64 lib64
ln -s usr/sbin sbin
cp "$busybox" usr/bin/busybox
for applet in sh ash cat cp dd echo grep ls mkdir mknod mount mv rm sed sleep umount uname; do
	ln -s busybox "usr/bin/$applet"
done
for applet in blkid losetup modprobe pivot_root switch_root; do
	ln -s ../bin/busybox "usr/sbin/$applet"
done
cp "$libdir/ld-linux-x86-64.so.2" "usr/lib/${libdir##*/}/"
ln -s "../lib/${libdir##*/}/ld-linux-x86-64.so.2" usr/lib64/ld-linux-x86-64.so.2
if [[ -d /usr/share/initramfs-tools/scripts ]]; then
	cp /usr/share/initramfs-tools/init init
	cp -r /usr/share/initramfs-tools/scripts scripts
else
	printf '#!/bin/sh\nexec /bin/sh\n' >init
	chmod 755 init
	mkdir scripts
fi
printf 'MODULES=most\nBUSYBOX=auto\nCOMPRESS=zstd\nBOOT=local\n' >conf/initramfs.conf
printf 'DPKG_ARCH=amd64\n' >conf/arch.conf
printf 'include /etc/ld.so.conf.d/*.conf\n' >etc/ld.so.conf
printf '/usr/local/lib\n%s\n' "$libdir" >etc/ld.so.conf.d/x86_64-linux-gnu.conf
: >etc/fstab

# --- pick host files (sorted) until the size / entry targets are reached ----
# Lib files (<= 8 MiB each) until the byte target minus a 5% reserve, plus the
# lib symlinks pointing at picked files; then small /usr/share files (<= 1 MiB)
# until the entry target.  Entry counts include the directories created.
skel_entries=$(find . -mindepth 1 | wc -l)
skel_bytes=$(find . -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
noweird=(! -name $'*\n*' ! -name $'*\t*')
{
	find "$libdir" -mindepth 1 \( -type f -o -type l \) -readable "${noweird[@]}" \
		-printf 'L\t%y\t%s\t%P\t%l\n' | sort -t $'\t' -k4,4
	find "$sharedir" -type f -readable "${noweird[@]}" \
		-printf 'S\t%y\t%s\t%P\t\n' | sort -t $'\t' -k4,4
} | awk -F '\t' -v bytes="$skel_bytes" -v entries="$skel_entries" \
	-v tbytes="$target_bytes" -v tentries="$target_entries" \
	-v lib="usr/lib/${libdir##*/}/" '
	function take(p, size,    n, i, d, parts) {
		n = split(p, parts, "/"); d = ""
		for (i = 1; i < n; i++) {
			d = d (i > 1 ? "/" : "") parts[i]
			if (!(d in seen)) { seen[d] = 1; entries++ }
		}
		seen[p] = 1; entries++; bytes += size
	}
	function flush_links(    l, t, more) { # lib symlinks whose target was picked
		do {
			more = 0
			for (l = 1; l <= nl; l++) {
				if ((lib lname[l]) in seen) continue
				t = lname[l]; sub(/[^\/]*$/, "", t)
				if (!((lib t ltarget[l]) in seen)) continue
				take(lib lname[l], 0); print "L\t" lname[l]; more = 1
			}
		} while (more)
		flushed = 1
	}
	BEGIN {
		seen["usr"] = seen["usr/lib"] = seen["usr/share"] = 1
		seen[substr(lib, 1, length(lib) - 1)] = 1
		seen[lib "ld-linux-x86-64.so.2"] = 1
	}
	$1 == "L" && $2 == "l" {
		if ($5 !~ /^\//) { nl++; lname[nl] = $4; ltarget[nl] = $5 }
		next
	}
	$1 == "L" {
		p = lib $4
		if (p in seen || $3 > 8388608 || bytes + $3 > tbytes * 0.95) next
		take(p, $3); print "L\t" $4; next
	}
	$1 == "S" {
		if (!flushed) flush_links()
		p = "usr/share/" $4
		if (entries >= tentries || p in seen || $3 > 1048576 || bytes + $3 > tbytes) next
		take(p, $3); print "S\t" $4
	}
	END { if (!flushed) flush_links() }
' >"$work/picked"

copy_from() { # SRC DEST < list of paths relative to SRC
	(cd "$1" && xargs -r -d '\n' cp -P --parents -t "$2")
}
sed -n 's/^L\t//p' "$work/picked" | copy_from "$libdir" "$tree/usr/lib/${libdir##*/}"
sed -n 's/^S\t//p' "$work/picked" | copy_from "$sharedir" "$tree/usr/share"

find . -exec touch -h -d "@$epoch" {} +

# --- pack -------------------------------------------------------------------
mkdir -p "$work/early/kernel/x86/microcode"
head -c 8192 /dev/zero |
	openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 \
	>"$work/early/kernel/x86/microcode/GenuineIntel.bin"
find "$work/early" -exec touch -h -d "@$epoch" {} +

{
	(cd "$work/early" && find kernel | sort | cpio --quiet -o -H newc -R 0:0 --reproducible)
	find . | sort | cpio --quiet -o -H newc -R 0:0 --reproducible | zstd -q -1 -T0
} >"$out"

printf '%s: %d entries, %d bytes of file data, image %d bytes\n' "$out" \
	"$(find . | wc -l)" "$(find . -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')" \
	"$(stat -c %s "$out")" >&2
