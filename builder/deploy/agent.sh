#!/bin/sh
# sov host agent: the host side of a deploy. sov sends this file as a store
# object and runs the stored copy, `sh ROOT/store/<hash>-sov-agent.sh COMMAND
# ROOT ARGS`; only a host that lacks it gets it on the command line
# (`sh -c AGENT sov-agent COMMAND ROOT ARGS`) for its state and its lock.
# It needs only a POSIX shell, coreutils, util-linux (flock, setsid), tar,
# zstd and b3sum.
#
# Host layout under ROOT:
#   store/<hash>-<name>   objects, verified by hash before they take that name
#   generations/<N>       -> ../store/<hash>-<site>-<host>-manifest.json
#   current               -> generations/<N>, replaced only by rename(2)
#   lock                  flock held by a deploy for its whole length, then by
#                         the collection of old generations it starts
#   lock.owner            who holds lock
#   busy                  flock held by every step that changes the host, for as
#                         long as it runs, even when its deploy died
#   switch.lock           flock taken by confirm, rollback and the watchdog
#   restore.parts         the owner of a restore waiting for its parts; each
#                         part holds a shared flock of it while it unpacks
#   confirmed/<N>         generation N was confirmed over a new connection; holds
#                         the generation N replaced (kept for a site rollback)
# and the secrets, outside ROOT: $SECRETS/<name> on a tmpfs, mode 0600.
set -eu

die() {
	printf 'sov-agent: %s\n' "$*" >&2
	exit 1
}

cmd=${1:?command}
ROOT=${2:?root}
shift 2
# Where secrets are delivered: sov's render::SECRETS_DIR.
SECRETS=/run/sov/secrets

# rename(2) of a symlink over another: readers see the old or the new target.
relink() {
	ln -sfn "$1" "$2.tmp.$$"
	mv -T "$2.tmp.$$" "$2"
}

# The activation script of the generation a host manifest describes.
activation_of() {
	sed -n 's/^  "activate": "\(.*\)",$/\1/p' "$1"
}

current_generation() {
	target=$(readlink "$ROOT/current" 2>/dev/null || true)
	printf '%s\n' "${target#generations/}"
}

# run_generation GEN ACTION: runs generation GEN's activation script with
# ACTION (activate, stop, start, check). The services it starts must not
# hold busy (fd 7) or a restore's restore.parts (fd 6).
run_generation() {
	SOV_MANIFEST="$ROOT/generations/$1" sh "$ROOT/store/$(activation_of "$ROOT/generations/$1")" "$2" 6>&- 7>&-
}

activate() {
	manifest="$ROOT/generations/$1"
	[ -e "$manifest" ] || die "generation $1 has no manifest on this host"
	script="$ROOT/store/$(activation_of "$manifest")"
	[ -f "$script" ] || die "generation $1: activation script missing from the store"
	run_generation "$1" activate
}

# roll_back_to PREV GEN: points current back at generation PREV and
# re-activates it. Without a PREV there is nothing to re-activate: current is
# removed and GEN's services are stopped (its `stop`), so that no service of a
# generation that failed keeps running; what its activation installed (a
# ruleset, configuration files) stays until a deploy replaces it.
# Caller holds switch.lock.
roll_back_to() {
	if [ -n "$1" ] && [ -e "$ROOT/generations/$1" ]; then
		relink "generations/$1" "$ROOT/current"
		sync "$ROOT"
		activate "$1"
		echo "rolled back to generation $1"
	else
		rm -f "$ROOT/current"
		sync "$ROOT"
		manifest="$ROOT/generations/$2"
		script="$ROOT/store/$(activation_of "$manifest" 2>/dev/null)"
		if [ -e "$manifest" ] && [ -f "$script" ]; then
			run_generation "$2" stop || true
		fi
		echo "rolled back to no generation: there is none before $2; current removed and generation $2's services stopped (what its activation installed stays until a deploy replaces it)"
	fi
}

# hold_busy STEP: holds ROOT/busy while this step runs. A step of a deploy
# whose connection died runs on; the next deploy waits for it here.
hold_busy() {
	exec 7>>"$ROOT/busy"
	if ! flock -n 7; then
		flock -w 50 7 || die "a step of an earlier deploy still runs on this host ($(cat "$ROOT/busy.step" 2>/dev/null || echo unknown))"
	fi
	printf '%s, pid %s\n' "$1" "$$" >"$ROOT/busy.step"
}

# owned_by OWNER: this step belongs to the deploy holding the host lock. A
# deploy that died lost its lock with its connection; a step of it that
# starts late does nothing.
owned_by() {
	[ "$(cat "$ROOT/lock.owner" 2>/dev/null || true)" = "$1" ] ||
		die "the host lock is no longer held by $1 (its connection was lost): nothing done"
}

# The state lines: prerequisites, current generation, objects held.
print_state() {
	missing=
	for tool in flock setsid tar zstd b3sum sync readlink mv ln sed; do
		command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
	done
	[ -z "$missing" ] || die "missing prerequisites:$missing"
	cur=$(current_generation)
	printf 'current %s\n' "$cur"
	if [ -n "$cur" ] && [ -e "$ROOT/confirmed/$cur" ]; then
		echo 'confirmed yes'
	else
		echo 'confirmed no'
	fi
	if [ -f "$ROOT/pending" ]; then printf 'pending %s\n' "$(cat "$ROOT/pending")"; fi
	printf 'manifest %s\n' "$(readlink "$ROOT/generations/$cur" 2>/dev/null | sed 's,.*/,,')"
	for f in "$ROOT"/store/*; do
		if [ -f "$f" ]; then printf 'object %s\n' "${f##*/}"; fi
	done
	# The secrets it holds, by hash, so that a changed or lost one (a
	# reboot empties the tmpfs) is sent again.
	for f in "$SECRETS"/*; do
		if [ -f "$f" ]; then printf 'secret %s %s\n' "${f##*/}" "$(b3sum --no-names "$f")"; fi
	done
}

case $cmd in
state)
	# One round trip, read-only.
	print_state
	;;

secrets)
	# secrets OWNER NAME=OWNER...: stdin is a tar of the named secrets. They
	# live on a tmpfs (never on disk), mode 0600, given to their owner, each
	# replaced by rename. The directory lets owners reach their file without
	# listing the others.
	hold_busy "secrets for ${1:?owner}"
	owned_by "$1"
	shift
	umask 077
	mkdir -p "$SECRETS"
	if [ "$(stat -f -c %T "$SECRETS")" != tmpfs ]; then
		mount -t tmpfs -o mode=0711,size=4m sov-secrets "$SECRETS" || die "cannot mount a tmpfs on $SECRETS for the secrets"
	fi
	chmod 0711 "$SECRETS"
	incoming="$SECRETS/.incoming.$$"
	mkdir "$incoming"
	trap 'rm -rf "$incoming"' EXIT
	tar -x --no-same-owner --no-same-permissions -C "$incoming" -f -
	for spec; do
		name=${spec%%=*}
		owner=${spec#*=}
		[ -f "$incoming/$name" ] || die "secret $name is missing from the stream"
		chmod 0600 "$incoming/$name"
		chown "$owner" "$incoming/$name" || die "secret $name: cannot give it to $owner (no such user on this host?)"
		mv -f "$incoming/$name" "$SECRETS/$name"
	done
	;;

hold-lock)
	# hold-lock OWNER: holds ROOT/lock until stdin closes (the deploy ends or
	# its connection dies) and prints `locked`, the state, and `end`. A line
	# `gc KEEP AGENT` on stdin: at the end, collect old generations in the
	# background, still under the lock.
	owner=${1:?owner}
	mkdir -p "$ROOT/store" "$ROOT/generations" "$ROOT/confirmed"
	exec 9>>"$ROOT/lock"
	if ! flock -n 9; then
		holder=$(cat "$ROOT/lock.owner" 2>/dev/null || echo 'another deploy')
		# An earlier deploy's collection is short: wait for it.
		case $holder in
		'sov gc '*) flock -w 50 9 || holder="$holder, for more than 50 s" ;;
		esac
		if ! flock -n 9; then
			printf 'locked by %s\n' "$holder"
			exit 75
		fi
	fi
	hold_busy "hold-lock for $owner"
	printf '%s\n' "$owner" >"$ROOT/lock.owner"
	exec 7>&-
	echo locked
	print_state
	echo end
	gc=
	while IFS= read -r line; do
		case $line in 'gc '*) gc=${line#gc } ;; esac
	done
	if [ -n "$gc" ]; then
		printf 'sov gc after %s\n' "$owner" >"$ROOT/lock.owner"
		# shellcheck disable=SC2086 # KEEP and AGENT, two words
		set -- $gc
		setsid sh "$ROOT/store/$2" gc "$ROOT" "$1" </dev/null >>"$ROOT/gc.log" 2>&1 &
	else
		rm -f "$ROOT/lock.owner"
	fi
	;;

receive)
	# receive OWNER [DICTIONARY...]: stdin is a zstd-compressed tar of
	# objects, compressed against the named objects of this store (their
	# bytes, in that order, as a raw dictionary). Each is hashed here and
	# takes its final name only if the hash matches; a partial one never does.
	hold_busy "receive for ${1:?owner}"
	owned_by "$1"
	shift
	incoming="$ROOT/store/.incoming.$$"
	mkdir -p "$incoming"
	trap 'rm -rf "$incoming"' EXIT
	if [ $# -gt 0 ]; then
		for d in "$@"; do cat "$ROOT/store/$d"; done >"$incoming/.dictionary"
		zstd -dcq -D "$incoming/.dictionary" | tar -x -C "$incoming" -f -
		rm -f "$incoming/.dictionary"
	else
		zstd -dcq | tar -x -C "$incoming" -f -
	fi
	for f in "$incoming"/*; do
		[ -f "$f" ] || continue
		name=${f##*/}
		want=${name%%-*}
		case $name in
		*.zst) got=$(zstd -dcq "$f" | b3sum --no-names) ;;
		*) got=$(b3sum --no-names "$f") ;;
		esac
		[ "$got" = "$want" ] || die "object $name arrived corrupt (blake3 $got)"
		chmod 0444 "$f"
	done
	sync "$incoming"/* 2>/dev/null || true
	for f in "$incoming"/*; do
		if [ -f "$f" ]; then mv -f "$f" "$ROOT/store/"; fi
	done
	sync "$ROOT/store"
	;;

switch)
	# switch OWNER N MANIFEST TIMEOUT AGENT: record generation N, start the
	# watchdog (this agent, from the store), make N current, activate it and
	# run its health checks.
	hold_busy "switch to generation ${2:?generation} for ${1:?owner}"
	owned_by "$1"
	gen=$2
	manifest=${3:?manifest}
	timeout=${4:?timeout}
	agent="$ROOT/store/${5:?agent}"
	[ -f "$ROOT/store/$manifest" ] || die "manifest $manifest is not in the store"
	exec 8>>"$ROOT/switch.lock"
	flock 8
	# An earlier switch's watchdog still pending goes: this switch starts its own.
	old=$(cat "$ROOT/watchdog.pid" 2>/dev/null || true)
	[ -z "$old" ] || kill "$old" 2>/dev/null || true
	prev=$(current_generation)
	# N is current but unconfirmed (its deploy died): resume that switch,
	# keeping the generation it would have gone back to.
	if [ "$prev" = "$gen" ] && [ ! -e "$ROOT/confirmed/$gen" ] && [ -f "$ROOT/pending" ]; then
		read -r pgen pprev <"$ROOT/pending" || true
		if [ "${pgen:-}" = "$gen" ]; then prev=${pprev:-}; fi
	fi
	printf '%s %s\n' "$gen" "$prev" >"$ROOT/pending"
	relink "../store/$manifest" "$ROOT/generations/$gen"
	rm -f "$ROOT/confirmed/$gen"
	sync "$ROOT/generations"
	setsid sh "$agent" watchdog "$ROOT" "$gen" "$prev" "$timeout" "$$" </dev/null >>"$ROOT/watchdog.log" 2>&1 7>&- 8>&- &
	echo $! >"$ROOT/watchdog.pid"
	relink "generations/$gen" "$ROOT/current"
	sync "$ROOT"
	exec 8>&-
	printf 'previous %s\n' "$prev"
	activate "$gen"
	run_generation "$gen" check
	;;

backup)
	# backup OWNER PATHS...: stops the current generation's services that write
	# the data, writes the PATHS that exist as one tar to stdout (owners,
	# modes, symlinks and times kept) and starts the services again, whether
	# the stream ends well or not (a dead connection included).
	hold_busy "backup for ${1:?owner}"
	owned_by "$1"
	shift
	cur=$(current_generation)
	services() {
		[ -n "$cur" ] || return 0
		run_generation "$cur" "$1" >>"$ROOT/backup.log" 2>&1
	}
	trap 'services start || printf "sov-agent: starting services failed, see %s\n" "$ROOT/backup.log" >&2' EXIT
	trap 'exit 1' HUP INT TERM PIPE
	services stop || die "stopping services for the backup failed: $(tail -n 3 "$ROOT/backup.log")"
	for p; do
		shift
		if [ -e "$p" ]; then
			set -- "$@" "${p#/}"
		else
			printf 'sov-agent: %s does not exist yet: not in this backup\n' "$p" >&2
		fi
	done
	if [ $# -eq 0 ]; then
		tar -c -f - -T /dev/null
	else
		tar -c -f - --sort=name --numeric-owner -C / -- "$@"
	fi
	;;

restore)
	# restore OWNER GEN PATHS...: puts a backup of PATHS back. Stops the
	# current generation's services, moves each path aside and prints `end`;
	# sov then streams the backup's files through `restore-part` commands
	# running side by side. A line `ok` on stdin says they all finished well:
	# the rest of stdin is a tar of the backup's directories and hard links,
	# unpacked last (a directory's times are set after the files in it are
	# written), the data is synced and the old copies are removed in the
	# background. Anything else, stdin closing included, puts the old copies
	# back. When GEN is current, starts the services and runs the health
	# checks; otherwise the switch to GEN that follows does.
	hold_busy "restore for ${1:?owner}"
	owned_by "$1"
	owner=$1
	gen=${2:?generation}
	shift 2
	cur=$(current_generation)
	if [ -n "$cur" ]; then
		run_generation "$cur" stop >&2 || die "stopping services for the restore failed"
	fi
	for p; do
		# An earlier restore that died keeps its aside copy: that is the data.
		if [ -e "$p.sov-old" ]; then
			rm -rf "$p"
		elif [ -e "$p" ]; then
			mv -T "$p" "$p.sov-old"
		fi
		# The parts find the folders above the data there: they would race to make them.
		mkdir -p "$(dirname "$p")"
	done
	# The parts check this file, under a shared flock of it, before they unpack.
	exec 6>>"$ROOT/restore.parts"
	printf '%s\n' "$owner" >"$ROOT/restore.parts"
	echo end
	IFS= read -r verdict || verdict=
	# Every part has finished (or never will start) before the data is judged.
	flock 6
	: >"$ROOT/restore.parts"
	exec 6>&-
	if [ "$verdict" != ok ] || ! tar -x -f - -p --same-owner --numeric-owner -C /; then
		for p; do
			rm -rf "$p"
			if [ -e "$p.sov-old" ]; then mv -T "$p.sov-old" "$p"; fi
		done
		if [ -n "$cur" ]; then run_generation "$cur" start >&2 || true; fi
		die "the backup stream broke: the data is as it was before the restore"
	fi
	sync
	# The new data is durable: the old copies go, renamed out of the way and
	# removed in the background (with any an earlier restore left behind),
	# so that the services need not wait the seconds it takes to unlink
	# tens of thousands of files.
	for p; do
		if [ -e "$p.sov-old" ]; then mv -T "$p.sov-old" "$p.sov-trash.$$"; fi
	done
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid sh -c 'for p; do rm -rf "$p".sov-trash.*; done' sov-trash "$@" </dev/null >/dev/null 2>&1 &
	if [ -n "$cur" ] && [ "$cur" = "$gen" ]; then
		run_generation "$cur" start >&2
		run_generation "$cur" check >&2
	fi
	;;

restore-part)
	# restore-part OWNER: stdin is a tar of some of a backup's files, unpacked
	# at / while `restore` for OWNER waits for its parts.
	owned_by "${1:?owner}"
	exec 6>>"$ROOT/restore.parts"
	flock -s 6
	[ "$(cat "$ROOT/restore.parts")" = "$1" ] || die "no restore for $1 is waiting for its data"
	tar -x -f - -p --same-owner --numeric-owner -C /
	;;

relabel)
	# relabel OWNER N MANIFEST: generation N has the same manifest as the
	# current, confirmed one: record the number without activating anything.
	hold_busy "relabel as generation ${2:?generation} for ${1:?owner}"
	owned_by "$1"
	gen=$2
	manifest=${3:?manifest}
	exec 8>>"$ROOT/switch.lock"
	flock 8
	cur=$(current_generation)
	if [ -z "$cur" ] || [ ! -e "$ROOT/confirmed/$cur" ]; then
		die "generation ${cur:-none} is current but not confirmed: it needs a switch"
	fi
	relink "../store/$manifest" "$ROOT/generations/$gen"
	printf '%s\n' "$cur" >"$ROOT/confirmed/$gen"
	relink "generations/$gen" "$ROOT/current"
	sync "$ROOT"
	;;

watchdog)
	# watchdog N PREV TIMEOUT: without confirmation of N in time, go back to PREV.
	gen=$1
	prev=$2
	# The confirmation is due TIMEOUT seconds after the switch (activation
	# and health checks, pid $4) ends; a switch that hangs gets 300 s.
	waited=0
	while [ -n "${4:-}" ] && kill -0 "$4" 2>/dev/null && [ "$waited" -lt 300 ]; do
		sleep 1
		waited=$((waited + 1))
	done
	sleep "$3"
	exec 8>>"$ROOT/switch.lock"
	flock 8
	[ -e "$ROOT/confirmed/$gen" ] && exit 0
	[ "$(current_generation)" = "$gen" ] || exit 0
	printf 'watchdog: generation %s not confirmed in %ss\n' "$gen" "$3"
	roll_back_to "$prev" "$gen"
	;;

confirm)
	# confirm N: over a new connection; fails if the watchdog already rolled back.
	gen=${1:?generation}
	exec 8>>"$ROOT/switch.lock"
	flock 8
	[ "$(current_generation)" = "$gen" ] || die "generation $gen is no longer current (the watchdog rolled it back)"
	pprev=
	if [ -f "$ROOT/pending" ]; then read -r pgen pprev <"$ROOT/pending" || true; fi
	[ "${pgen:-}" = "$gen" ] || pprev=
	printf '%s\n' "$pprev" >"$ROOT/confirmed/$gen"
	sync "$ROOT/confirmed"
	rm -f "$ROOT/pending"
	pid=$(cat "$ROOT/watchdog.pid" 2>/dev/null || true)
	[ -z "$pid" ] || kill "$pid" 2>/dev/null || true
	echo confirmed
	;;

rollback)
	# rollback N PREV: the deploy failed; undo N now rather than waiting.
	gen=${1:?generation}
	prev=${2-}
	hold_busy "rollback of generation $gen"
	exec 8>>"$ROOT/switch.lock"
	flock 8
	pid=$(cat "$ROOT/watchdog.pid" 2>/dev/null || true)
	[ -z "$pid" ] || kill "$pid" 2>/dev/null || true
	if [ "$(current_generation)" = "$gen" ]; then
		roll_back_to "$prev" "$gen"
	else
		echo "generation $gen is not current: nothing to roll back"
	fi
	;;

gc)
	# gc KEEP: keep the newest KEEP generations, the current one and the one
	# it replaced, then remove every object none of them lists. Agents stay: a
	# watchdog may run one. Started by hold-lock, whose host lock it holds.
	keep=${1:?keep}
	exec 8>>"$ROOT/switch.lock"
	flock 8
	cur=$(current_generation)
	before=$(cat "$ROOT/confirmed/$cur" 2>/dev/null || true)
	for g in "$ROOT"/generations/*; do
		n=${g##*/}
		case $n in '' | *[!0-9]*) ;; *) echo "$n" ;; esac
	done | sort -n | head -n "-$keep" | while read -r old; do
		if [ "$old" != "$cur" ] && [ "$old" != "$before" ]; then
			rm -f "$ROOT/generations/$old" "$ROOT/confirmed/$old"
		fi
	done
	live="$ROOT/store/.live.$$"
	for g in "$ROOT"/generations/*; do
		[ -e "$g" ] || continue
		readlink "$g" | sed 's,.*/,,'
		awk -F'"' '$2 == "object" { print $4 }' "$g"
	done | sort -u >"$live"
	removed=0
	for f in "$ROOT"/store/*; do
		name=${f##*/}
		case $name in *-sov-agent.sh) continue ;; esac
		if [ -f "$f" ] && ! grep -qxF "$name" "$live"; then
			rm -f "$f"
			removed=$((removed + 1))
		fi
	done
	rm -f "$live"
	sync "$ROOT/store"
	rm -f "$ROOT/lock.owner"
	echo "removed $removed objects"
	;;

*)
	die "unknown command $cmd"
	;;
esac
