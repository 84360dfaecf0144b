#!/usr/bin/env bash
# Reserve 2 MB hugepages and mount hugetlbfs for Switchyard (DPDK). See Hugepages/README.md.
#
#   Hugepages/reserve.sh [PAGES] [--mount DIR]     reserve PAGES x 2 MB (default 512 = 1 GiB), mount DIR
#   Hugepages/reserve.sh --status                  print the state only (any user)
#   Hugepages/reserve.sh --release [--mount DIR]   unmount DIR if unused, set the pages back to 0
#
# Idempotent: nothing is changed when enough pages are reserved and DIR is already mounted.
# Every run ends with the state report that --status prints.
set -euo pipefail

readonly SYSFS_DIR=/sys/kernel/mm/hugepages/hugepages-2048kB
readonly PROC_NR=/proc/sys/vm/nr_hugepages

pages=512
mount_dir=/dev/hugepages
action=reserve
pages_given=false
started=false # once true, errors are followed by the state report

usage() {
    cat <<'EOF'
Usage: Hugepages/reserve.sh [PAGES] [--mount DIR] [--status] [--release]

  PAGES        number of 2 MB hugepages to reserve (default 512 = 1 GiB)
  --mount DIR  where to mount hugetlbfs (default /dev/hugepages)
  --status     print the hugepage state and exit (does not need root)
  --release    unmount DIR if nothing uses it, and set the 2 MB pages back to 0
  -h, --help   this text

Reserving and releasing need root. Every run ends with the state report.
EOF
}

die() {
    printf 'reserve.sh: error: %s\n' "$*" >&2
    if [[ $started == true ]]; then report || true; fi
    exit 1
}

say() {
    printf 'reserve.sh: %s\n' "$*"
}

# ---- arguments ---------------------------------------------------------------------------

while (($# > 0)); do
    case $1 in
        --status) action=status ;;
        --release) action=release ;;
        --mount)
            (($# >= 2)) || die "--mount needs a directory"
            mount_dir=$2
            shift
            ;;
        --mount=*) mount_dir=${1#--mount=} ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            usage >&2
            die "unknown option: $1"
            ;;
        *)
            [[ $1 =~ ^[0-9]+$ ]] || die "PAGES must be a whole number of 2 MB pages, got '$1'"
            pages=$((10#$1))
            ((pages > 0)) || die "PAGES must be at least 1 (use --release to free the pages)"
            pages_given=true
            ;;
    esac
    shift
done

[[ -n $mount_dir ]] || die "--mount needs a directory"
if [[ $action != reserve && $pages_given == true ]]; then
    die "PAGES cannot be combined with --$action"
fi
# Compare mount points by their canonical path (no trailing slash, no symlinks).
mount_dir=$(realpath -m -- "$mount_dir")

# ---- reading the state -------------------------------------------------------------------

# The file that holds the number of reserved 2 MB pages. /proc/sys/vm/nr_hugepages is only
# used when sysfs lacks the per-size directory and the default hugepage size is 2 MB.
nr_file() {
    if [[ -e $SYSFS_DIR/nr_hugepages ]]; then
        printf '%s\n' "$SYSFS_DIR/nr_hugepages"
    elif [[ -e $PROC_NR && $(meminfo_kb Hugepagesize) == 2048 ]]; then
        printf '%s\n' "$PROC_NR"
    else
        return 1
    fi
}

# meminfo_kb KEY: the number after "KEY:" in /proc/meminfo (0 when absent).
meminfo_kb() {
    local key=$1 name value _
    while read -r name value _; do
        if [[ $name == "$key:" ]]; then
            printf '%s\n' "$value"
            return 0
        fi
    done </proc/meminfo
    printf '0\n'
}

# A count of 2 MB pages: the sysfs file NAME, else the /proc/meminfo field KEY when the
# default huge page size is 2 MB. Usage: pages_2m nr_hugepages HugePages_Total
pages_2m() {
    if [[ -r $SYSFS_DIR/$1 ]]; then
        cat "$SYSFS_DIR/$1"
    elif [[ $(meminfo_kb Hugepagesize) == 2048 ]]; then
        meminfo_kb "$2"
    else
        printf '0\n'
    fi
}
pages_2m_total() { pages_2m nr_hugepages HugePages_Total; }
pages_2m_free() { pages_2m free_hugepages HugePages_Free; }

# hugetlbfs mounts, one "DIR<TAB>pagesize" line each, from /proc/mounts
# (which escapes spaces and tabs in paths as \040 and \011).
hugetlbfs_mounts() {
    local _dev dir fstype options _rest size
    while read -r _dev dir fstype options _rest; do
        [[ $fstype == hugetlbfs ]] || continue
        size=default
        if [[ ,$options, =~ ,pagesize=([^,]+), ]]; then
            size=${BASH_REMATCH[1]}
        fi
        printf '%b\t%s\n' "$dir" "$size"
    done </proc/mounts
}

# True when hugetlbfs is mounted exactly at $mount_dir.
mounted_at_dir() {
    local dir _size
    while IFS=$'\t' read -r dir _size; do
        [[ $dir == "$mount_dir" ]] && return 0
    done < <(hugetlbfs_mounts)
    return 1
}

# The state report. Switchyard's own test (EAL.hugepageState) is HugePages_Free > 0 in
# /proc/meminfo and a hugetlbfs mounted anywhere; this repeats it exactly.
report() {
    local total free default_kb meminfo_free mounts where reason
    total=$(pages_2m_total)
    free=$(pages_2m_free)
    default_kb=$(meminfo_kb Hugepagesize)
    meminfo_free=$(meminfo_kb HugePages_Free)

    local -a mounts=()
    local dir size
    while IFS=$'\t' read -r dir size; do
        mounts+=("$dir (pagesize=$size)")
    done < <(hugetlbfs_mounts)

    printf 'hugepages: %s x 2 MB reserved (%s MB), %s free\n' "$total" "$((total * 2))" "$free"
    if ((default_kb != 2048)); then
        printf 'hugepages: note: the default hugepage size is %s kB; Switchyard counts those (%s free)\n' \
            "$default_kb" "$meminfo_free"
    fi
    if ((${#mounts[@]} == 0)); then
        where="not mounted"
    else
        where="mounted at ${mounts[0]}"
        local m
        for m in "${mounts[@]:1}"; do where+=", $m"; done
    fi
    printf 'hugetlbfs: %s\n' "$where"

    if ((meminfo_free > 0 && ${#mounts[@]} > 0)); then
        printf 'switchyard: will use hugepages (eal.hugepages: auto or required)\n'
    else
        if ((meminfo_free == 0 && ${#mounts[@]} == 0)); then
            reason="no free hugepages and hugetlbfs not mounted"
        elif ((meminfo_free == 0)); then
            reason="no free hugepages"
        else
            reason="hugetlbfs not mounted"
        fi
        printf 'switchyard: will fall back to --no-huge (%s); eal.hugepages: required would fail\n' "$reason"
    fi
}

require_root() {
    ((EUID == 0)) || die "$1 hugepages needs root; run: sudo $0 ${*:2}"
}

# write_nr N: write N into the nr_hugepages file.
write_nr() {
    local file=$1 n=$2
    if ! { printf '%s\n' "$n" >"$file"; } 2>/dev/null; then
        die "cannot write $file (read-only /sys, e.g. inside a container? reserve on the host)"
    fi
}

# ---- actions -----------------------------------------------------------------------------

do_reserve() {
    require_root "reserving" "$@"
    local file current granted
    file=$(nr_file) || die "this kernel has no 2 MB hugepages ($SYSFS_DIR is missing)"
    current=$(cat "$file")

    if ((current >= pages)); then
        say "$current x 2 MB pages already reserved (asked for $pages); not changed"
    else
        write_nr "$file" "$pages"
        granted=$(cat "$file")
        if ((granted == 0)); then
            die "asked the kernel for $pages x 2 MB pages and it granted none (too little free memory, or memory too fragmented); free memory, or reserve at boot (see Hugepages/README.md)"
        elif ((granted < pages)); then
            say "warning: asked for $pages x 2 MB pages, the kernel granted $granted (not enough contiguous free memory); to get more, try again after 'echo 1 > /proc/sys/vm/compact_memory' or reserve at boot"
        else
            say "reserved $granted x 2 MB pages (was $current)"
        fi
    fi

    if mounted_at_dir; then
        say "hugetlbfs already mounted at $mount_dir; not changed"
    else
        mkdir -p -- "$mount_dir"
        mount -t hugetlbfs -o pagesize=2M nodev "$mount_dir" || die "could not mount hugetlbfs at $mount_dir"
        say "mounted hugetlbfs (pagesize=2M) at $mount_dir"
    fi
}

do_release() {
    require_root "releasing" --release "$@"
    local file left out

    # Unmount first: unmounting frees pages held by files left in the mount (for example
    # rtemap_* files of a DPDK process that ran without --in-memory and crashed).
    if mounted_at_dir; then
        if out=$(umount -- "$mount_dir" 2>&1); then
            say "unmounted hugetlbfs from $mount_dir"
        else
            say "could not unmount $mount_dir (in use?), left mounted: ${out:-umount failed}"
        fi
    else
        say "no hugetlbfs mounted at $mount_dir; nothing to unmount"
    fi

    file=$(nr_file) || die "this kernel has no 2 MB hugepages ($SYSFS_DIR is missing)"
    if (($(cat "$file") == 0)); then
        say "no 2 MB pages reserved; not changed"
    else
        write_nr "$file" 0
        left=$(pages_2m_total) # includes surplus pages still in use
        if ((left == 0)); then
            say "released all 2 MB pages"
        else
            say "set the 2 MB pages to 0; $left still in use, the kernel frees them when their users exit"
        fi
    fi
}

started=true
case $action in
    status) ;;
    reserve)
        if [[ $pages_given == true ]]; then do_reserve "$pages" --mount "$mount_dir"; else do_reserve --mount "$mount_dir"; fi
        ;;
    release) do_release --mount "$mount_dir" ;;
    *) die "internal error: unknown action $action" ;;
esac
report
