#!/usr/bin/env bash
# Prepare this host for Airlock sandboxes (idempotent, as root, no systemd):
#   - virtlogd and libvirtd running (started with -d if they are not)
#   - isolated libvirt networks airlock-sbx and airlock-prod, autostarted
#   - dir storage pool `airlock` at $AIRLOCK_STATE_DIR/disks, autostarted
#   - nftables table `inet airlock` from airlock.nft
# Touches nothing else: not the `default` network, not other pools, tables or
# processes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${AIRLOCK_STATE_DIR:-/var/lib/airlock}
URI=qemu:///system
NETWORKS=(airlock-sbx airlock-prod)
POOL=airlock

log() { printf '[host %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
virsh() { command virsh -q -c "$URI" "$@"; }

[ "$(id -u)" = 0 ] || die "must run as root"
for tool in virtlogd libvirtd virsh nft dnsmasq; do
	command -v "$tool" >/dev/null || die "missing $tool (run deploy/dev/install-deps.sh)"
done

# ---- /dev/kvm ------------------------------------------------------------------
# Without udev, /dev/kvm stays root:root 0600 instead of Debian's root:kvm 0660.
# libvirt then probes QEMU with KVM (as root) but finds KVM unusable for the
# qemu user, treats its capability cache as stale and re-probes QEMU on nearly
# every API call: `virsh define` took 70 s, `virsh version` 7 s. Restore the
# permissions udev would set (guests here still use type='qemu', i.e. TCG).
if [ -c /dev/kvm ] && getent group kvm >/dev/null &&
	[ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
	log "setting /dev/kvm to root:kvm 0660 (as udev would)"
	chgrp kvm /dev/kvm
	chmod 0660 /dev/kvm
fi

# ---- daemons ------------------------------------------------------------------
# alive NAME: the pid in /run/NAME.pid is a live process called NAME.
alive() {
	local pid
	pid=$(cat "/run/$1.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

start_daemon() {
	if alive "$1"; then
		log "$1 running (pid $(cat "/run/$1.pid"))"
		return
	fi
	log "starting $1"
	"$1" -d
	for _ in $(seq 50); do
		alive "$1" && return
		sleep 0.1
	done
	die "$1 did not start"
}

start_daemon virtlogd
start_daemon libvirtd

for i in $(seq 100); do
	[ -S /run/libvirt/libvirt-sock ] && virsh version >/dev/null 2>&1 && break
	[ "$i" = 100 ] && die "libvirtd socket not ready after 20 s"
	sleep 0.2
done

# ---- networks -------------------------------------------------------------------
for net in "${NETWORKS[@]}"; do
	if ! virsh net-info "$net" >/dev/null 2>&1; then
		log "defining network $net"
		virsh net-define "$HERE/$net.xml" >/dev/null
	fi
	want=$(sed -n "s/.*<bridge name='\([^']*\)'.*/\1/p" "$HERE/$net.xml")
	have=$(virsh net-info "$net" | awk '$1 == "Bridge:" { print $2 }')
	[ "$want" = "$have" ] || die "network $net exists with bridge $have, want $want (virsh net-undefine $net, then re-run)"
	virsh net-autostart "$net" >/dev/null
	if [ "$(virsh net-info "$net" | awk '$1 == "Active:" { print $2 }')" != yes ]; then
		log "starting network $net"
		virsh net-start "$net" >/dev/null
	fi
	log "network $net up on $have"
done

# ---- storage pool -----------------------------------------------------------------
mkdir -p "$STATE/disks"
if ! virsh pool-info "$POOL" >/dev/null 2>&1; then
	log "defining storage pool $POOL at $STATE/disks"
	virsh pool-define-as "$POOL" dir --target "$STATE/disks" >/dev/null
fi
have=$(virsh pool-dumpxml "$POOL" | sed -n 's:.*<path>\(.*\)</path>.*:\1:p')
[ "$have" = "$STATE/disks" ] || die "pool $POOL points at $have, want $STATE/disks (virsh pool-undefine $POOL, then re-run)"
virsh pool-autostart "$POOL" >/dev/null
if [ "$(virsh pool-info "$POOL" | awk '$1 == "State:" { print $2 }')" != running ]; then
	virsh pool-start "$POOL" >/dev/null
fi
log "storage pool $POOL at $STATE/disks"

# ---- firewall ----------------------------------------------------------------------
# One transaction: make sure the table exists, drop its rules and chains (so
# that changed hooks or priorities apply), then load airlock.nft. The set
# egress_open and its elements survive, so open egress is not cut by a re-run.
chains=$(nft list table inet airlock 2>/dev/null | awk '$1 == "chain" { print $2 }' || true)
{
	echo "table inet airlock"
	echo "flush table inet airlock"
	for c in $chains; do echo "delete chain inet airlock $c"; done
	cat "$HERE/airlock.nft"
} >"${TMPDIR:-/tmp}/airlock.nft.$$"
trap 'rm -f "${TMPDIR:-/tmp}/airlock.nft.$$"' EXIT
nft -f "${TMPDIR:-/tmp}/airlock.nft.$$" || die "loading airlock.nft failed (table left as it was)"
log "nftables table inet airlock loaded"

log "host ready"
