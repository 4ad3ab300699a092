#!/usr/bin/env bash
# The sov build benchmark (numbers, not a pass/fail test).
#
#   benches/build.sh [SITES] [HOSTS] [RUNS] [bench.py options]
#
# Defaults: 100 sites x 20 hosts, 5 runs per measurement. Builds the release
# binary, then runs benches/bench.py, which generates a synthetic stack in a
# temporary directory, times `sov build` (cold, no-op, one-site edits, peak
# RSS) and the same artifacts built by nix-build in a private store, prints
# a table and removes its temporary files. Options after RUNS go to
# bench.py: --nix-sites N, --nix-cold-runs N, --no-nix, --keep (see
# `python3 benches/bench.py --help`).
#
# Needs: cargo, python3 (standard library only), GNU time (/usr/bin/time,
# installed here with apt-get when missing), and for the comparison nix-build
# (Debian's nix-bin; skipped when absent).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

# Up to three leading numbers are SITES HOSTS RUNS; the rest goes to bench.py.
numbers=()
while [ $# -gt 0 ] && [ ${#numbers[@]} -lt 3 ] && [[ $1 =~ ^[0-9]+$ ]]; do
  numbers+=("$1")
  shift
done
sites=${numbers[0]:-100}
hosts=${numbers[1]:-20}
runs=${numbers[2]:-5}

if [ ! -x /usr/bin/time ]; then
  echo "[bench] installing GNU time for peak RSS" >&2
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
  else
    sudo apt-get install -y -qq time >/dev/null
  fi
fi

# Other work may leave the tree briefly unbuildable: retry a few times.
for attempt in 1 2 3 4 5; do
  if (cd "$repo" && cargo build --release --quiet --bin sov); then
    break
  fi
  if [ "$attempt" = 5 ]; then
    echo "[bench] cargo build --release failed $attempt times" >&2
    exit 1
  fi
  echo "[bench] cargo build --release failed; retrying in 60 s" >&2
  sleep 60
done

exec python3 "$here/bench.py" --bin "$repo/target/release/sov" --repo "$repo" \
  "$sites" "$hosts" "$runs" "$@"
