#!/bin/sh
# Builds, once, the base root filesystem every test host boots from, and
# prints its path. The path carries a hash of this script, so changing the
# package list or the configuration below gives a new rootfs instead of
# silently reusing a stale one. Safe to run concurrently (flock) and cheap when
# the rootfs is already there; .ci/install-deps runs it so tests never wait.
#
# Environment: SOV_TEST_CACHE (default /var/cache/sov-test), SOV_TEST_MIRROR
# (default: the Debian bookworm mirror configured for apt).
set -eu

suite=bookworm
packages="openssh-server systemd systemd-sysv dbus iproute2 iputils-ping
coreutils util-linux tar zstd b3sum nftables knot knot-dnsutils python3 procps rsync"

cache=${SOV_TEST_CACHE:-/var/cache/sov-test}
version=$(sha256sum "$0" | cut -c1-16)
rootfs=$cache/rootfs-$version

if [ -d "$rootfs" ]; then
  echo "$rootfs"
  exit 0
fi

# The mirror apt already uses for bookworm (one-line or deb822 sources), so
# that the build needs no other network than the machine's own apt.
apt_mirror() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk -v suite="$suite" '$1 == "deb" {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite) { print $i; exit }
    }'
  cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" } {
      uri = ""; deb = 0; ours = 0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^#/) continue
        if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb = 1
        if ($i ~ /^Suites:/ && (" " $i " ") ~ ("[ \t]" suite "[ \t]")) ours = 1
        if ($i ~ /^URIs:/) { split($i, f, /[ \t]+/); uri = f[2] }
      }
      if (deb && ours && uri != "") { print uri; exit }
    }'
}
mirror=${SOV_TEST_MIRROR:-$(apt_mirror | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$cache"
exec 9>"$cache/rootfs.lock"
flock 9
if [ -d "$rootfs" ]; then # another caller built it while we waited
  echo "$rootfs"
  exit 0
fi

# Leftovers of a build that crashed: unmount what debootstrap mounted inside
# them before removing, and never cross into another filesystem.
for old in "$cache"/rootfs-*.tmp; do
  [ -e "$old" ] || continue
  findmnt -rn -o TARGET | grep -F "$old/" | sort -r | while read -r m; do
    umount -l "$m" || true
  done
  rm -rf --one-file-system "$old"
done

tmp=$rootfs.tmp
start=$(date +%s)
keyring=
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
  keyring=--keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "building the test hosts' root filesystem from $mirror (once)..." >&2
# shellcheck disable=SC2086 # $keyring is one word or none
debootstrap --variant=minbase $keyring \
  --include="$(echo $packages | tr ' ' ,)" \
  "$suite" "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
  tail -n 30 "$cache/debootstrap.log" >&2
  echo "debootstrap failed; full log: $cache/debootstrap.log" >&2
  exit 1
}

# Per-host identity comes from the harness: the machine id from nspawn at
# boot, the hostname and the sshd host key written before boot.
: >"$tmp/etc/machine-id"
ln -sf /etc/machine-id "$tmp/var/lib/dbus/machine-id" # else every host shares dbus's
rm -f "$tmp/etc/hostname" "$tmp"/etc/ssh/ssh_host_*

cat >"$tmp/etc/ssh/sshd_config.d/sov-test.conf" <<'EOF'
# Test host: root by key only, one host key written by the harness.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxStartups 100:30:200
EOF

# Fast, quiet boots: nothing that waits for a console, the network or a clock.
# Roles start what they need (knot, nftables) themselves.
systemctl --root="$tmp" disable knot.service nftables.service >/dev/null 2>&1 || true
systemctl --root="$tmp" mask \
  systemd-firstboot.service console-getty.service getty@.service \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer \
  systemd-networkd-wait-online.service >/dev/null 2>&1
systemctl --root="$tmp" enable ssh.service >/dev/null 2>&1

rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
mv "$tmp" "$rootfs"

# Older versions go, unless a running lab still has one as its lower layer.
for old in "$cache"/rootfs-*; do
  [ "$old" = "$rootfs" ] && continue
  grep -qF "lowerdir=$old" /proc/mounts && continue
  rm -rf --one-file-system "$old"
done
echo "built $rootfs in $(($(date +%s) - start))s" >&2
echo "$rootfs"
