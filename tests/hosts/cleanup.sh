#!/bin/sh
# Removes what test labs left behind: their containers, overlay mounts,
# network namespaces, links and folders. Everything a lab creates is named
# after its id N (1-254): netns and root-namespace links `sovlabN-*`, the
# folder /var/tmp/sovlab/N, nspawn --machine=sovlabN-*. A live lab holds
# /var/tmp/sovlab/N.lock, so running this beside other test runs is safe.
#
#   cleanup.sh            every lab whose lock nobody holds (crashed runs)
#   cleanup.sh --lab N    lab N, unconditionally (the harness's own teardown)
#
# Keep the names in step with tests/common/hosts.rs.
set -u

base=/var/tmp/sovlab

alive() { # a process that exists and is not a zombie
  [ -r "/proc/$1/stat" ] && ! sed 's/.*) //' "/proc/$1/stat" | grep -q '^Z'
}

# nspawn processes of lab $1, found by the machine name on their command line
# (one grep over every command line: forking per process is slow).
nspawn_pids() {
  grep -lzE -- "^--machine=sovlab$1-" /proc/[0-9]*/cmdline 2>/dev/null |
    while read -r f; do
      head -zn1 "$f" 2>/dev/null | tr -d '\0' | grep -q 'systemd-nspawn$' &&
        { d=${f%/cmdline}; echo "${d#/proc/}"; }
    done
}

netns_of() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^sovlab$1-"; }

clean_lab() {
  n=$1
  # Killing a container's init ends every process of its pid namespace.
  pids=$(for ns in $(netns_of "$n"); do ip netns pids "$ns"; done; nspawn_pids "$n")
  # shellcheck disable=SC2086 # a list of pids
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  for _ in $(seq 100); do
    left=
    for p in $pids; do alive "$p" && left="$left $p"; done
    [ -z "$left" ] && break
    sleep 0.1
  done
  [ -n "${left:-}" ] && echo "cleanup: lab $n: processes still alive:$left" >&2

  findmnt -rn -o TARGET | grep -F "$base/$n/" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  for ns in $(netns_of "$n"); do ip netns del "$ns"; done
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^sovlab$n-"); do
    ip link del "$l" 2>/dev/null
  done
  rm -rf --one-file-system "${base:?}/${n:?}"
  for d in /run/systemd/nspawn/propagate/sovlab"$n"-*; do
    [ -e "$d" ] && rm -rf --one-file-system "$d"
  done
  return 0
}

if [ "${1:-}" = --lab ]; then
  case ${2:-} in '' | *[!0-9]*) echo "usage: $0 [--lab N]" >&2; exit 2 ;; esac
  clean_lab "$2"
  exit 0
fi

# Every lab id that left a trace anywhere.
labs=$({
  for d in "$base"/*/; do
    d=${d%/} && d=${d##*/}
    case $d in '' | *[!0-9]*) ;; *) echo "$d" ;; esac
  done
  ip netns list 2>/dev/null | awk '{print $1}'
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}'
} | sed -n 's/^sovlab\([0-9][0-9]*\)-.*/\1/p; s/^\([0-9][0-9]*\)$/\1/p' | sort -un)

for n in $labs; do
  mkdir -p "$base"
  exec 9>"$base/$n.lock"
  if flock -n 9; then
    echo "cleanup: removing leftovers of lab $n" >&2
    clean_lab "$n"
  else
    echo "cleanup: lab $n is in use, left alone" >&2
  fi
  exec 9>&-
done
