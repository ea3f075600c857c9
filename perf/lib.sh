# shellcheck shell=bash
# Shared helpers for perf/seed-table, perf/vs-qemu and perf/flamegraph.
# Sourced, not run. Everything a script sets up (mounts, zram and loop
# devices, cgroups, temporary directories) is registered with at_exit and
# undone, newest first, when the script exits for any reason.

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$PERF_DIR/.." && pwd)

log() { printf '%s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

_CLEANUPS=()
# at_exit CMD...: run CMD (one shell word list, eval'd) at exit.
at_exit() { _CLEANUPS+=("$*"); }
_run_cleanups() {
	local i
	trap - EXIT INT TERM
	for ((i = ${#_CLEANUPS[@]} - 1; i >= 0; i--)); do
		eval "${_CLEANUPS[i]}" || warn "cleanup failed: ${_CLEANUPS[i]}"
	done
	_CLEANUPS=()
}
trap _run_cleanups EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

is_root() { [[ $(id -u) -eq 0 ]]; }

# results_dir: perf/results/<date>-<host>, or $1 if given.
results_dir() {
	if [[ -n ${1:-} ]]; then
		printf '%s\n' "$1"
	else
		printf '%s/results/%s-%s\n' "$PERF_DIR" "$(date +%Y-%m-%d)" "$(hostname -s 2>/dev/null || hostname)"
	fi
}

# build_tools DIR: build qbench and the perf helpers into DIR.
build_tools() {
	local bin=$1
	log "building qbench and perf helpers into $bin"
	(cd "$REPO_DIR" && go build -o "$bin/" ./cmd/qbench ./perf/cmd/...)
}

# make_tmpdir VAR PARENT: a fresh directory, removed at exit.
make_tmpdir() {
	local -n _out=$1
	_out=$(mktemp -d "${2:-${TMPDIR:-/tmp}}/qring-perf.XXXXXX")
	at_exit "rm -rf --one-file-system -- '$_out'"
}

# ram_fs VAR NAME SIZE [FSTYPE]: ext4 (or FSTYPE: ext4, xfs) on a
# RAM-backed block device, mounted on a
# fresh directory (root only). Prefers a new zram device (hot_add, so an
# existing /dev/zram0 is never touched), falls back to a loop device with
# direct I/O over a file on tmpfs. Sets VAR to the mount point and
# RAMFS_DEV[NAME] / RAMFS_DESC[NAME] to the block device and a description.
# shellcheck disable=SC2034 # read by the scripts that source this file
declare -A RAMFS_DEV RAMFS_DESC
ram_fs() {
	local -n _mnt=$1
	local name=$2 size=$3 fstype=${4:-ext4} dev="" desc="" idx
	is_root || return 1
	local base
	make_tmpdir base /tmp
	mkdir -p "$base/mnt"
	if [[ -w /sys/class/zram-control/hot_add ]] && idx=$(cat /sys/class/zram-control/hot_add 2>/dev/null); then
		dev=/dev/zram$idx
		at_exit "echo $idx > /sys/class/zram-control/hot_remove"
		at_exit "echo 1 > /sys/block/zram$idx/reset"
		if echo "$size" >"/sys/block/zram$idx/disksize"; then
			desc="$fstype on zram$idx ($size, $(sed 's/.*\[\(.*\)\].*/\1/' "/sys/block/zram$idx/comp_algorithm" 2>/dev/null || echo '?')), mounted discard"
		else
			dev=""
		fi
	fi
	if [[ -z $dev ]]; then
		mkdir -p "$base/tmpfs"
		mount -t tmpfs -o "size=$size" "qring-perf-$name" "$base/tmpfs" || return 1
		at_exit "umount '$base/tmpfs'"
		truncate -s "$size" "$base/tmpfs/disk.img"
		dev=$(losetup -f --show --direct-io=on "$base/tmpfs/disk.img") || return 1
		at_exit "losetup -d '$dev'"
		desc="$fstype on $dev (loop, direct-io) over a $size tmpfs file, mounted discard"
	fi
	case $fstype in
	# lazy_itable_init=0: no background init thread skewing the first run.
	ext4) mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dev" >/dev/null || return 1 ;;
	xfs) mkfs.xfs -q -f "$dev" >/dev/null || return 1 ;;
	*) warn "ram_fs: unsupported file system $fstype" && return 1 ;;
	esac
	mount -o discard "$dev" "$base/mnt" || return 1
	at_exit "umount '$base/mnt'"
	# shellcheck disable=SC2034 # read by the scripts that source this file
	RAMFS_DEV[$name]=$dev
	# shellcheck disable=SC2034
	RAMFS_DESC[$name]=$desc
	_mnt=$base/mnt
}

# blkio_cgroup VAR DEV IOPS BPS: a cgroup v1 blkio group throttling writes
# to DEV (write_iops_device, write_bps_device); VAR gets its directory.
blkio_cgroup() {
	local -n _cg=$1
	local dev=$2 iops=$3 bps=$4 root=/sys/fs/cgroup/blkio majmin
	is_root || return 1
	[[ -w $root/cgroup.procs ]] || return 1
	majmin=$(cat "/sys/block/$(basename "$dev")/dev") || return 1
	_cg=$root/qring-perf-$$-$(basename "$dev")
	mkdir "$_cg" || return 1
	at_exit "rmdir '$_cg'"
	echo "$majmin $iops" >"$_cg/blkio.throttle.write_iops_device" || return 1
	echo "$majmin $bps" >"$_cg/blkio.throttle.write_bps_device" || return 1
}

# cgroup_prefix VAR CG: VAR becomes a command prefix that runs the rest of
# the command line inside cgroup CG (empty for CG = "").
cgroup_prefix() {
	local -n _pre=$1
	_pre=()
	if [[ -n $2 ]]; then
		# shellcheck disable=SC2016 # expanded by the inner shell
		_pre=(bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' _ "$2")
	fi
}

# fsdesc DIR: "fstype on source" for DIR.
fsdesc() { findmnt -n -o FSTYPE,SOURCE -T "$1" 2>/dev/null | awk '{print $1 " on " $2}'; }

# svg_to_png SVG: write SVG's PNG next to it if a converter exists.
svg_to_png() {
	local svg=$1 png=${1%.svg}.png
	if command -v rsvg-convert >/dev/null; then
		rsvg-convert -b white -o "$png" "$svg" && log "wrote $png (rsvg-convert)"
	elif command -v convert >/dev/null; then
		convert "$svg" "$png" && log "wrote $png (ImageMagick)"
	else
		log "no PNG: neither rsvg-convert (apt-get install librsvg2-bin) nor ImageMagick found"
	fi
}

# rotate I WORDS...: print WORDS rotated left by I (interleaving order for repeat I).
rotate() {
	local i=$1
	shift
	local a=("$@") n=$#
	for ((k = 0; k < n; k++)); do printf '%s\n' "${a[(k + i) % n]}"; done
}

# wait_idle: sync, then wait until the machine is idle (busy CPU under 5 %
# of all cores in two successive 200 ms windows; at most 15 s) and print
# the seconds waited. Deleting an image leaves work behind: XFS frees a
# deleted file's extents in background workers (inode inactivation) and
# discards them, which took about 2 s of CPU after QEMU's fragmented alloc
# image on zram. Without the wait, the tool that runs next pays for it
# (qbench on XFS alloc: 0.87-1.07 s right after QEMU, 0.60-0.71 s after
# the wait).
wait_idle() {
	local u n s i w x y z b t pb pt db dt ok=0 k t0
	t0=$(date +%s.%N)
	sync
	read -r _ u n s i w x y z _ </proc/stat
	pb=$((u + n + s + x + y + z))
	pt=$((pb + i + w))
	for ((k = 0; k < 75; k++)); do
		sleep 0.2
		read -r _ u n s i w x y z _ </proc/stat
		b=$((u + n + s + x + y + z))
		t=$((b + i + w))
		db=$((b - pb))
		dt=$((t - pt))
		pb=$b
		pt=$t
		if ((dt > 0 && db * 100 < dt * 5)); then
			((++ok >= 2)) && break
		else
			ok=0
		fi
	done
	awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }'
}
