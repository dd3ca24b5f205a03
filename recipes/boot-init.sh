#!/bin/sh
# The init of recipes/boot-initramfs.toml: load the image's modules, wait for the root
# device, check it read-only when e2fsck is here, mount it, and switch_root to its init;
# or, when `rootpack boot IMAGE -- CMD` passed a command (rootpack.cmd=, base64 of a
# shell-quoted line), run it chrooted in the root and report its exit status on the
# console (rootpack.token= marks the line), then power off.
#
# Kernel command line: root=/dev/vda | LABEL=L | UUID=U, rootfstype= (default ext4),
# rootflags=, ro | rw (default ro), rootwait=SECONDS (default 30), init= (default
# /sbin/init).
# Every applet at its usual path: the kernel asks for modules through /sbin/modprobe.
mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

root= fstype=ext4 flags= mode=ro wait=30 init=/sbin/init cmd= token=
for arg in $(cat /proc/cmdline); do
	case $arg in
	root=*) root=${arg#root=} ;;
	rootfstype=*) fstype=${arg#rootfstype=} ;;
	rootflags=*) flags=${arg#rootflags=} ;;
	ro | rw) mode=$arg ;;
	rootwait=*) wait=${arg#rootwait=} ;;
	init=*) init=${arg#init=} ;;
	rootpack.cmd=*) cmd=${arg#rootpack.cmd=} ;;
	rootpack.token=*) token=${arg#rootpack.token=} ;;
	esac
done

panic() {
	echo "rootpack-init: panic: $*" >/dev/console
	if [ -n "$token" ]; then
		echo "rootpack-exit-status:$token:125" >/dev/console
		poweroff -f
	fi
	echo "rootpack-init: a shell, to look around (exit powers off)" >/dev/console
	sh </dev/console >/dev/console 2>&1
	poweroff -f
}

[ -n "$token" ] && echo "rootpack-init: started" >/dev/console
for conf in /etc/modules-load.d/*.conf; do
	[ -f "$conf" ] || continue
	for m in $(grep -v '^#' "$conf"); do
		modprobe "$m" || echo "rootpack-init: modprobe $m failed" >/dev/console
	done
done

[ -n "$root" ] || panic "no root= on the kernel command line"
device=
tries=$((wait * 10))
while :; do
	case $root in
	LABEL=* | UUID=*) device=$(findfs "$root" 2>/dev/null) ;;
	*) [ -b "$root" ] && device=$root ;;
	esac
	[ -n "$device" ] && break
	tries=$((tries - 1))
	[ "$tries" -gt 0 ] || panic "root device $root did not appear in ${wait}s (is its driver among the image's modules?)"
	sleep 0.1
done

if command -v e2fsck >/dev/null; then
	report=$(e2fsck -n "$device" 2>&1)
	[ $? -lt 4 ] || echo "rootpack-init: warning: e2fsck -n $device: $report" >/dev/console
fi
mount -t "$fstype" -o "$mode${flags:+,$flags}" "$device" /root ||
	panic "mounting $device ($fstype, $mode${flags:+,$flags}) on /root failed"

if [ -n "$cmd" ]; then
	line=$(echo "$cmd" | base64 -d) || panic "rootpack.cmd is not base64"
	for d in proc sys dev; do
		[ -d "/root/$d" ] && mount --bind "/$d" "/root/$d"
	done
	eval "set -- $line"
	chroot /root "$@" </dev/console >/dev/console 2>&1
	status=$?
	for d in dev sys proc; do umount "/root/$d" 2>/dev/null; done
	umount /root 2>/dev/null
	echo "rootpack-exit-status:$token:$status" >/dev/console
	poweroff -f
fi

umount /sys /proc
mount --move /dev /root/dev 2>/dev/null
exec switch_root /root "$init"
