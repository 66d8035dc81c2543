#!/usr/bin/env bash
# Install the Debian packages Airlock needs (idempotent, as root). apt runs
# only when something is missing.
#   --with-guestfs   also install libguestfs-tools (slow, only for virt-diff comparisons)
set -euo pipefail

PACKAGES=(
	gcc libc6-dev qemu-system-x86 qemu-utils qemu-block-extra
	libvirt-daemon-system libvirt-dev dnsmasq-base
	debootstrap e2fsprogs
	openssh-server openssh-client
	ansible-core ansible-lint
	genisoimage chromium postgresql nftables curl
)
for arg in "$@"; do
	case "$arg" in
	--with-guestfs) PACKAGES+=(libguestfs-tools) ;;
	*) echo "usage: $0 [--with-guestfs]" >&2; exit 2 ;;
	esac
done

log() { printf '[deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "ERROR: must run as root"; exit 1; }

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
	log "all ${#PACKAGES[@]} packages installed"
	exit 0
fi

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "done"
