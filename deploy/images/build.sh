#!/usr/bin/env bash
# Build the Airlock golden image "bookworm" (see docs/ARCHITECTURE.md,
# "Golden image contract") from Debian's mirror with debootstrap.
#
# Output: ${AIRLOCK_IMAGE_CACHE:-/var/cache/airlock/images}/bookworm/<hash>/
#   disk.qcow2 (0444)  whole-disk ext4, root=/dev/vda, no partitions
#   vmlinuz, initrd.img  for direct kernel boot (console=ttyS0)
#   inputs.sha256      <hash>: sha256 over this script, packages.txt, rootfs/, src/
#   inputs.list        the per-file hashes that went into <hash>
#   packages.list      dpkg -l of the image, for reference
# plus a `current` symlink next to it. An image whose inputs did not change is
# not rebuilt. Log lines go to stderr; the image directory is printed on stdout.
#
# Needs root, debootstrap, e2fsprogs (mkfs.ext4 -d), qemu-utils, and a C
# compiler with a static libc (gcc, libc6-dev) for the guest helper in src/.
set -euo pipefail

NAME=bookworm
SUITE=bookworm
MIRROR=${AIRLOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${AIRLOCK_IMAGE_CACHE:-/var/cache/airlock/images}
DEB_CACHE=${AIRLOCK_DEB_CACHE:-/var/cache/airlock/debs}
DISK_SIZE=8G # virtual size of the guest's root file system

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
for tool in debootstrap mkfs.ext4 qemu-img chroot flock sha256sum cc; do
	command -v "$tool" >/dev/null || die "missing $tool (run deploy/dev/install-deps.sh)"
done

# ---- inputs and their hash -------------------------------------------------
# Every file that shapes the image is hashed with its path and exec bit, so
# that any change (and only a change) triggers a rebuild.
inputs_list() {
	cd "$HERE"
	{ echo build.sh; echo packages.txt; find rootfs src -type f -o -type l; } | LC_ALL=C sort |
		while read -r f; do
			[ -f "$f" ] || die "inputs: $f is not a regular file"
			if [ -x "$f" ]; then x=x; else x=-; fi
			printf '%s %s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$x" "$f"
		done
}
packages() { sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$HERE/packages.txt" | paste -sd, -; }

INPUTS=$(inputs_list)
HASH=$(printf '%s\n' "$INPUTS" | sha256sum | cut -d' ' -f1)
OUT="$CACHE/$NAME/$HASH"

mkdir -p "$CACHE/$NAME" "$DEB_CACHE"
chmod 0755 "$CACHE" "$CACHE/$NAME"

publish() {
	ln -sfn "$HASH" "$CACHE/$NAME/current.tmp"
	mv -T "$CACHE/$NAME/current.tmp" "$CACHE/$NAME/current"
	log "image ready: $OUT"
	printf '%s\n' "$OUT"
}

complete() { [ -f "$OUT/disk.qcow2" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ] && [ -f "$OUT/inputs.sha256" ]; }

if complete; then
	log "cached: inputs unchanged ($HASH)"
	publish
	exit 0
fi

# One build at a time per cache; a second caller waits, then finds the result.
exec 9>"$CACHE/$NAME/.lock"
flock -n 9 || { log "another build is running; waiting for it"; flock 9; }
if complete; then
	log "cached: built by a concurrent run ($HASH)"
	publish
	exit 0
fi

# ---- build ------------------------------------------------------------------
START=$(date +%s)
WORK=$(mktemp -d "$CACHE/$NAME/.build-XXXXXX")
ROOT="$WORK/root"

# Unmount anything left under the build root (a failed debootstrap can leave
# /proc or /sys mounted), then remove it without crossing file systems.
unmount_root() {
	awk -v r="$ROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" || true; done
}
cleanup() {
	unmount_root
	rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

log "building $NAME ($HASH)"
log "debootstrap $SUITE minbase from $MIRROR (.deb cache: $DEB_CACHE)"
debootstrap --variant=minbase --include="$(packages)" --cache-dir="$DEB_CACHE" \
	"$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
	{ tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
log "debootstrap done in $(($(date +%s) - START)) s"

log "configuring the root file system"
# Our files (rootfs/), owned by root, 0755 if executable in the repo else 0644.
(cd "$HERE/rootfs" && find . -type f) | while read -r f; do
	mode=0644
	[ -x "$HERE/rootfs/$f" ] && mode=0755
	install -D -o root -g root -m "$mode" "$HERE/rootfs/$f" "$ROOT/$f"
done

# airlock-activate (src/): gives a sandbox its identity in one static exec
# (files from stdin, clock, entropy reseed, hostname, sshd if not running);
# a shell version cost 1.3-1.9 s right after a restore under TCG, where
# every exec is slow. It must at least reject bad records here.
cc -static -Os -s -Wall -Wextra -Werror -o "$WORK/airlock-activate" "$HERE/src/airlock-activate.c"
if printf '0644 5 relative\nhello' | "$WORK/airlock-activate" 2>/dev/null; then
	die "airlock-activate accepted a relative path"
fi
install -D -o root -g root -m 0755 "$WORK/airlock-activate" "$ROOT/usr/local/sbin/airlock-activate"

# No message of the day for SSH sessions: pam_motd runs run-parts and
# uname on every session, ~0.2 s of each new connection under TCG, for a
# text nobody reads (every session is a program's).
sed -i 's/^session[[:space:]].*pam_motd\.so/# airlock, no motd: &/' "$ROOT/etc/pam.d/sshd"
! grep -q '^[^#]*pam_motd' "$ROOT/etc/pam.d/sshd" || die "pam_motd still in /etc/pam.d/sshd"

cat >"$ROOT/etc/apt/sources.list" <<EOF
deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
echo airlock >"$ROOT/etc/hostname"
cat >"$ROOT/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	airlock
::1		localhost ip6-localhost ip6-loopback
EOF

# Identity is per sandbox: no machine-id, no host keys, sshd off until activated.
: >"$ROOT/etc/machine-id"
ln -sfn /etc/machine-id "$ROOT/var/lib/dbus/machine-id"
rm -f "$ROOT"/etc/ssh/ssh_host_*
install -d -m 0755 "$ROOT/etc/ssh/airlock" "$ROOT/etc/ssh/airlock/principals"
rm -f "$ROOT/var/lib/systemd/random-seed"

# Enable first: enabling networkd also enables wait-online, which we do not
# want (templates boot without a NIC and would wait 2 minutes for it). The
# apt timers would only fail offline and add noise to sandbox diffs.
chroot "$ROOT" systemctl enable systemd-networkd.service >>"$WORK/chroot.log" 2>&1
chroot "$ROOT" systemctl disable ssh.service ssh.socket systemd-networkd-wait-online.service \
	apt-daily.timer apt-daily-upgrade.timer >>"$WORK/chroot.log" 2>&1
# The daily maintenance timers fire as soon as a restored sandbox's clock
# jumps past a midnight the template has not seen: CPU load in the first
# seconds and files that change under the agent (logrotate's state).
# Sandboxes live for minutes; none of these has work to do there.
for unit in logrotate.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer man-db.timer; do
	[ ! -e "$ROOT/lib/systemd/system/$unit" ] || chroot "$ROOT" systemctl disable "$unit" >>"$WORK/chroot.log" 2>&1
done
# qemu-guest-agent has no [Install] section: udev starts it as soon as the
# org.qemu.guest_agent.0 virtio port appears. Make sure that rule is there.
grep -qs org.qemu.guest_agent.0 "$ROOT"/lib/udev/rules.d/*qemu-guest-agent*.rules ||
	die "qemu-guest-agent udev rule missing"
for unit in multi-user.target.wants/ssh.service network-online.target.wants/systemd-networkd-wait-online.service; do
	[ ! -e "$ROOT/etc/systemd/system/$unit" ] || die "$unit still enabled"
done
! compgen -G "$ROOT/etc/ssh/ssh_host_*" >/dev/null || die "ssh host keys left in the image"

# Kernel and initrd for direct kernel boot.
kernel=$(find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
initrd=$(find "$ROOT/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)
[ -n "$kernel" ] && [ -n "$initrd" ] || die "no kernel/initrd in /boot"
install -m 0444 "$kernel" "$WORK/vmlinuz"
install -m 0444 "$initrd" "$WORK/initrd.img"
log "kernel $(basename "$kernel")"

chroot "$ROOT" dpkg -l >"$WORK/packages.list"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/tmp/* "$ROOT"/var/tmp/*

log "making ext4 ($DISK_SIZE) from the tree and converting to qcow2"
truncate -s "$DISK_SIZE" "$WORK/disk.raw"
mkfs.ext4 -q -F -L airlock-root -E root_owner=0:0 -d "$ROOT" "$WORK/disk.raw"
qemu-img convert -f raw -O qcow2 "$WORK/disk.raw" "$WORK/disk.qcow2"
rm -f "$WORK/disk.raw"
chmod 0444 "$WORK/disk.qcow2"

printf '%s\n' "$HASH" >"$WORK/inputs.sha256"
printf '%s\n' "$INPUTS" >"$WORK/inputs.list"
chmod 0444 "$WORK/inputs.sha256" "$WORK/inputs.list" "$WORK/packages.list"

# Publish atomically: the directory appears complete or not at all.
unmount_root
rm -rf --one-file-system "$ROOT"
rm -f "$WORK/debootstrap.log" "$WORK/chroot.log"
chmod 0755 "$WORK"
rm -rf "$OUT"
mv -T "$WORK" "$OUT"
trap - EXIT
log "built in $(($(date +%s) - START)) s; disk $(du -h "$OUT/disk.qcow2" | cut -f1)"
publish
