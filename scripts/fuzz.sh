#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) in turn for SECONDS each (default 60), one
# process and one job at a time, at the lowest priority, and prints the executions, the
# rate and the findings of each. Exits non-zero if any target found a crash, a leak of
# memory past 2 GiB or a timeout; the input is then in fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Seed corpora are made here from tests/fixtures and from small archives packed by the real
# tools (GNU cpio and tar, gzip, zstd, xz, lzma, bzip2, lz4 -l, lzop), the recipes, a host
# program with its ld.so.cache, and fuzz/seeds. The corpora grow in fuzz/corpus (ignored by
# git) from one run to the next. Needs cargo-fuzz and a nightly toolchain; with
# FUZZ_INSTALL=1 (as CI sets) either is installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
seconds=${1:-60}
shift || true
all_targets=(cpio extract tar framing recipe elf seccomp)
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")

# Builds share the machine: one cargo at a time where the lock exists (see DESIGN.md).
locked() {
	if command -v flock >/dev/null; then
		flock /tmp/rootpack-cargo.lock "$@"
	else
		"$@"
	fi
}

if ! rustup toolchain list | grep -q '^nightly'; then
	[[ ${FUZZ_INSTALL:-0} == 1 ]] || { echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly --profile minimal)" >&2; exit 1; }
	rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
	[[ ${FUZZ_INSTALL:-0} == 1 ]] || { echo "fuzz.sh: cargo-fuzz is missing (cargo install cargo-fuzz)" >&2; exit 1; }
	locked cargo install cargo-fuzz --locked
fi
# Built once, under the lock; the runs below start the binaries themselves, since
# `cargo fuzz run` would rebuild (outside the lock) whenever a source changed.
locked nice -n 19 cargo +nightly fuzz build -O
bin_dir=fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release

# ---- seed corpora ----
corpus=fuzz/corpus
seed() { # seed TARGET FILE...: copied under a name of their content, so reruns add nothing
	local target=$1 f
	shift
	mkdir -p "$corpus/$target"
	for f in "$@"; do
		[[ -s $f ]] && cp "$f" "$corpus/$target/seed-$(sha1sum <"$f" | cut -c1-16)"
	done
	return 0
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
	cd "$work"
	mkdir -p tree/bin tree/etc/deep tree/dev
	printf 'hello\n' >tree/etc/motd
	printf '#!/bin/sh\necho hi\n' >tree/bin/hi && chmod 4755 tree/bin/hi
	ln tree/etc/motd tree/etc/hard
	ln -s ../etc/motd tree/bin/link
	ln -s /etc/passwd tree/etc/abs
	head -c 3000 /bin/true >tree/etc/deep/data
	mkfifo tree/dev/fifo
	cd tree
	find . | LC_ALL=C sort >../list
	for fmt in newc crc odc; do cpio --quiet -o -H $fmt <../list >../$fmt.cpio; done
	tar --format=ustar -cf ../ustar.tar . && tar --format=gnu -cf ../gnu.tar . && tar --format=pax -cf ../pax.tar .
	ln -s "$(printf 'x%.0s' {1..150})" long-name-link-target-over-100-bytes
	tar --format=gnu -cf ../gnu-long.tar . && tar --format=pax -cf ../pax-long.tar .
	cd ..
	for tool in "gzip -n" "zstd -q --no-check" "zstd -q" "xz --check=crc32" "xz --format=lzma" "bzip2" "lz4 -l -q" "lzop"; do
		name=${tool%% *}-$(echo "$tool" | tr -dc 'a-z' | tail -c 6)
		if command -v "${tool%% *}" >/dev/null; then
			$tool <newc.cpio >"newc.cpio.$name" 2>/dev/null || true
			$tool <ustar.tar >"ustar.tar.$name" 2>/dev/null || true
		fi
	done
	# Two segments, as microcode initramfs: uncompressed, then compressed.
	for f in newc.cpio.*; do cat newc.cpio "$f" >"early+$f"; done
	# lz4 and lzop streams without their magic, behind framing's picker byte.
	[[ -s newc.cpio.lz4-lzlq ]] && { printf '\0'; tail -c +5 newc.cpio.lz4-lzlq; } >framing-lz4
	[[ -s newc.cpio.lzop-lzop ]] && { printf '\1'; tail -c +10 newc.cpio.lzop-lzop; } >framing-lzop
	cat /bin/true /etc/ld.so.cache >elf-true 2>/dev/null || true
	printf '#!/bin/sh\n' >elf-script
	printf '#!/usr/bin/env sh -e\n' >elf-env-script
) >/dev/null 2>&1 || echo "fuzz.sh: some seeds could not be made (missing tools?)" >&2
seed cpio tests/fixtures/3cpio/*.cpio "$work"/*.cpio* "$work"/early+* "$work"/*.tar*
seed extract tests/fixtures/3cpio/*.cpio "$work"/*.cpio* "$work"/early+* "$work"/*.tar
seed tar "$work"/*.tar
seed framing "$work"/framing-*
seed recipe recipes/*.toml fuzz/seeds/recipe/*
seed elf "$work"/elf-*
seed seccomp fuzz/seeds/seccomp/*
# Every input that once crashed a target (kept with a regression test) seeds it again.
for t in "${all_targets[@]}"; do
	for f in tests/fixtures/fuzz/"$t"/*; do [[ -e $f ]] && seed "$t" "$f"; done
done

max_len() {
	case $1 in
	elf) echo 262144 ;;
	recipe | seccomp) echo 8192 ;;
	*) echo 65536 ;;
	esac
}

# ---- runs ----
failed=0
summary=()
for t in "${targets[@]}"; do
	dict=fuzz/dict/$t.dict
	[[ $t == extract ]] && dict=fuzz/dict/cpio.dict
	log=fuzz/artifacts/$t.log
	mkdir -p "fuzz/artifacts/$t"
	before=$(find "fuzz/artifacts/$t" -type f | wc -l)
	echo "fuzz.sh: $t for ${seconds}s" >&2
	status=0
	nice -n 19 "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" \
		-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -max_len="$(max_len "$t")" \
		-dict="$dict" -print_final_stats=1 "$corpus/$t" >"$log" 2>&1 || status=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
	files=$(find "$corpus/$t" -type f | wc -l)
	after=$(find "fuzz/artifacts/$t" -type f | wc -l)
	findings=$((after - before))
	if ((status != 0)) && ((findings == 0)); then findings=1; fi
	if ((findings > 0)); then
		failed=1
		echo "fuzz.sh: $t FOUND something (exit $status); log: $log" >&2
		grep -m5 -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" >&2 || tail -20 "$log" >&2
	fi
	summary+=("$(printf '%-8s %10s runs %7s exec/s %5ss  peak %5s MB  corpus %5s  findings %s' \
		"$t" "${runs:-?}" "${rate:-?}" "$seconds" "${rss:-?}" "$files" "$findings")")
done
printf '%s\n' "${summary[@]}"
exit $failed
