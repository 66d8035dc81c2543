#!/usr/bin/env bash
# Prepare this host for Airlock sandboxes (idempotent, as root, no systemd):
#   - virtlogd and libvirtd running (started with -d if they are not)
#   - nftables table `inet airlock` from airlock.nft (loaded first)
#   - libvirt networks airlock-sbx (forward mode open, filtered by the table)
#     and airlock-prod (isolated), autostarted; an existing network whose
#     forward mode differs from the XML here is redefined, keeping its UUID,
#     MAC and DHCP reservations, and restarted if no guest is attached
#     (AIRLOCK_NET_RESTART=1 restarts it anyway)
#   - net.ipv4.ip_forward=1, so that approved egress can be routed
#   - dir storage pool `airlock` at $AIRLOCK_STATE_DIR/disks, autostarted
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

# ---- networks -------------------------------------------------------------------
# forward_mode prints the mode of the <forward> element on stdin (none: "").
forward_mode() { sed -n "s/.*<forward mode='\([^']*\)'.*/\1/p"; }

# apply_forward NET makes the persistent definition's forward mode the one
# of $HERE/NET.xml. It edits the existing definition instead of replacing
# it, so the UUID, the MAC and the sandboxes' DHCP reservations survive.
apply_forward() {
	local net=$1 want have xml
	want=$(forward_mode <"$HERE/$net.xml")
	have=$(virsh net-dumpxml --inactive "$net" | forward_mode)
	[ "$want" = "$have" ] && return 0
	log "network $net: forward mode ${have:-none} -> ${want:-none}"
	xml="${TMPDIR:-/tmp}/airlock-net.$$.xml"
	virsh net-dumpxml --inactive "$net" |
		sed -e '/<forward[^>]*\/>/d' -e '/<forward[^>]*[^/]>/,/<\/forward>/d' |
		if [ -n "$want" ]; then sed "/<\/name>/a\\  <forward mode='$want'/>"; else cat; fi >"$xml"
	virsh net-define "$xml" >/dev/null || { rm -f "$xml"; die "redefining network $net failed"; }
	rm -f "$xml"
}

for net in "${NETWORKS[@]}"; do
	if ! virsh net-info "$net" >/dev/null 2>&1; then
		log "defining network $net"
		virsh net-define "$HERE/$net.xml" >/dev/null
	fi
	want=$(sed -n "s/.*<bridge name='\([^']*\)'.*/\1/p" "$HERE/$net.xml")
	have=$(virsh net-info "$net" | awk '$1 == "Bridge:" { print $2 }')
	[ "$want" = "$have" ] || die "network $net exists with bridge $have, want $want (virsh net-undefine $net, then re-run)"
	apply_forward "$net"
	virsh net-autostart "$net" >/dev/null
	if [ "$(virsh net-info "$net" | awk '$1 == "Active:" { print $2 }')" != yes ]; then
		log "starting network $net"
		virsh net-start "$net" >/dev/null
	elif [ "$(virsh net-dumpxml "$net" | forward_mode)" != "$(forward_mode <"$HERE/$net.xml")" ]; then
		ports=$(find "/sys/class/net/$have/brif" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
		if [ "$ports" = 0 ] || [ "${AIRLOCK_NET_RESTART:-}" = 1 ]; then
			log "restarting network $net to apply its forward mode ($ports guest interfaces attached)"
			virsh net-destroy "$net" >/dev/null
			virsh net-start "$net" >/dev/null
		else
			log "WARNING: network $net runs with an old forward mode and $ports guest interface(s) attached;" \
				"the new one applies at its next start (stop those guests and re-run, or AIRLOCK_NET_RESTART=1)"
		fi
	fi
	log "network $net up on $have (forward: $(virsh net-dumpxml "$net" | forward_mode | grep . || echo none))"
done

# ---- forwarding ------------------------------------------------------------------
# Approved egress is routed by this host. The forward chain of inet airlock
# (loaded above) drops everything from and into the airlock bridges except
# sources in egress_open, so turning routing on opens nothing by itself.
if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 1 ]; then
	log "enabling net.ipv4.ip_forward (sandboxes stay closed: see airlock.nft)"
	sysctl -qw net.ipv4.ip_forward=1
fi
if [ -d /etc/sysctl.d ] && ! grep -qs '^net.ipv4.ip_forward = 1' /etc/sysctl.d/60-airlock.conf; then
	printf '# airlock deploy/host/setup.sh: approved sandbox egress is routed (filtered by nft table inet airlock)\nnet.ipv4.ip_forward = 1\n' >/etc/sysctl.d/60-airlock.conf
fi

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

log "host ready"
