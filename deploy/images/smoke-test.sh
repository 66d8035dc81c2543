#!/usr/bin/env bash
# Boot a throw-away VM from the golden image and check the contract by hand,
# the way the hypervisor worker uses it (needs deploy/host/setup.sh first):
#   DHCP lease on airlock-sbx, guest agent (ping, exec, file write),
#   identity files + airlock-activate, SSH with a user certificate against a
#   pinned host CA, and isolation (no host services, no host eth0, no outside).
# Prints timings. Leaves nothing behind (domain, overlay, keys, http server).
#   usage: smoke-test.sh [IMAGE_DIR]   (default: the `current` bookworm image)
#   SMOKE_KEEP=1 keeps the VM and its keys for poking around (remove by hand).
set -euo pipefail

CACHE=${AIRLOCK_IMAGE_CACHE:-/var/cache/airlock/images}
STATE=${AIRLOCK_STATE_DIR:-/var/lib/airlock}
IMG=$(readlink -f "${1:-$CACHE/bookworm/current}")
NAME=airlock-smoke-$$
DISK="$STATE/disks/$NAME.qcow2"
MAC=$(printf '52:54:00:%02x:%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)))
HOST_IP=10.77.0.1
PORT=18080
TMP=$(mktemp -d)
HTTP_PID=

log() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
virsh() { command virsh -q -c qemu:///system "$@"; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

cleanup() {
	[ -z "$HTTP_PID" ] || kill "$HTTP_PID" 2>/dev/null || true
	if [ -n "${SMOKE_KEEP:-}" ]; then
		log "SMOKE_KEEP set: left $NAME ($DISK) and $TMP for you to remove"
		return
	fi
	virsh destroy "$NAME" >/dev/null 2>&1 || true
	virsh undefine "$NAME" >/dev/null 2>&1 || true
	rm -f "$DISK"
	rm -rf "$TMP"
}
trap cleanup EXIT

[ -f "$IMG/disk.qcow2" ] || fail "no image at $IMG (run deploy/images/build.sh)"

# ---- guest agent helpers (JSON through python3) -------------------------------
agent() { virsh qemu-agent-command --timeout "${AGENT_TIMEOUT:-10}" "$NAME" "$1"; }
json() { python3 -c "import json, sys; print(json.dumps($1))" "${@:2}"; }

# gexec 'shell command': run it in the guest; print stdout+stderr; return its code.
gexec() {
	local pid st
	pid=$(agent "$(json '{"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", sys.argv[1]], "capture-output": True}}' "$1")" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["return"]["pid"])')
	while :; do
		st=$(agent "{\"execute\": \"guest-exec-status\", \"arguments\": {\"pid\": $pid}}")
		python3 -c 'import json, sys; sys.exit(0 if json.loads(sys.argv[1])["return"]["exited"] else 1)' "$st" && break
		sleep 0.1
	done
	python3 -c '
import base64, json, sys
r = json.loads(sys.argv[1])["return"]
for k in ("out-data", "err-data"):
    sys.stdout.write(base64.b64decode(r.get(k, "")).decode(errors="replace"))
sys.exit(r.get("exitcode", 1))' "$st"
}

# gput GUEST_PATH LOCAL_FILE: write a file with guest-file-open/write/close.
gput() {
	local h
	h=$(agent "$(json '{"execute": "guest-file-open", "arguments": {"path": sys.argv[1], "mode": "w"}}' "$1")" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["return"])')
	agent "{\"execute\": \"guest-file-write\", \"arguments\": {\"handle\": $h, \"buf-b64\": \"$(base64 -w0 <"$2")\"}}" >/dev/null
	agent "{\"execute\": \"guest-file-close\", \"arguments\": {\"handle\": $h}}" >/dev/null
}

# ---- boot ---------------------------------------------------------------------------
log "image $IMG"
qemu-img create -q -f qcow2 -F qcow2 -b "$IMG/disk.qcow2" "$DISK"
cat >"$TMP/domain.xml" <<EOF
<domain type='qemu'>
  <name>$NAME</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$IMG/vmlinuz</kernel>
    <initrd>$IMG/initrd.img</initrd>
    <cmdline>root=/dev/vda rw console=ttyS0</cmdline>
  </os>
  <features>
    <acpi/>
    <tcg><tb-cache unit='MiB'>128</tb-cache></tcg>
  </features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$DISK'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='airlock-sbx'/>
      <mac address='$MAC'/>
      <model type='virtio'/>
    </interface>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='pty'/>
    <console type='pty'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
EOF
virsh define "$TMP/domain.xml" >/dev/null
T0=$(now)
virsh start "$NAME" >/dev/null
log "started $NAME ($MAC)"

for i in $(seq 240); do
	AGENT_TIMEOUT=1 agent '{"execute": "guest-ping"}' >/dev/null 2>&1 && break
	[ "$i" = 240 ] && fail "guest agent did not answer within 2 min"
	sleep 0.5
done
T_AGENT=$(since "$T0")
log "guest agent answers after $T_AGENT s"

IP=
for i in $(seq 120); do
	IP=$(virsh domifaddr "$NAME" --source lease | awk '$3 == "ipv4" { sub("/.*", "", $4); print $4 }')
	[ -n "$IP" ] && break
	[ "$i" = 120 ] && fail "no DHCP lease within 60 s"
	sleep 0.5
done
T_LEASE=$(since "$T0")
log "DHCP lease $IP after $T_LEASE s"

out=$(gexec 'echo exec-ok; systemctl is-enabled ssh.service; ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l; wc -c </etc/machine-id') ||
	fail "guest-exec: $out"
[ "$(echo "$out" | sed -n 1p)" = exec-ok ] || fail "guest-exec output: $out"
[ "$(echo "$out" | sed -n 2p)" = disabled ] || fail "ssh.service is not disabled: $out"
[ "$(echo "$out" | sed -n 3p)" = 0 ] || fail "image has ssh host keys"
log "guest-exec ok; ssh.service disabled; no host keys"

# ---- identity -------------------------------------------------------------------------
K="$TMP/keys"
mkdir "$K"
ssh-keygen -q -t ed25519 -N '' -C host_ca -f "$K/host_ca"
ssh-keygen -q -t ed25519 -N '' -C user_ca -f "$K/user_ca"
ssh-keygen -q -t ed25519 -N '' -C "$NAME" -f "$K/host_ed25519_key"
ssh-keygen -q -s "$K/host_ca" -I "$NAME" -h -n "$NAME,$IP" -V -5m:+1h "$K/host_ed25519_key.pub"
ssh-keygen -q -t ed25519 -N '' -C user -f "$K/user"
ssh-keygen -q -s "$K/user_ca" -I smoke -n "$NAME" -V -1m:+10m "$K/user.pub"
echo "$NAME" >"$K/principals"
echo "$NAME" >"$K/hostname"
head -c 64 /dev/urandom >"$K/entropy"
echo "@cert-authority $IP $(cat "$K/host_ca.pub")" >"$K/known_hosts"

# Identity: records "MODE LEN PATH\n" + content on airlock-activate's stdin,
# as the driver sends them (written to a file first: guest-exec input-data
# is not available to gexec).
record() { printf '%s %d %s\n' "$1" "$(stat -c %s "$3")" "$2"; cat "$3"; }
{
	record 0600 /etc/ssh/airlock/host_ed25519_key "$K/host_ed25519_key"
	record 0644 /etc/ssh/airlock/host_ed25519_key-cert.pub "$K/host_ed25519_key-cert.pub"
	record 0644 /etc/ssh/airlock/user_ca.pub "$K/user_ca.pub"
	record 0644 /etc/ssh/airlock/principals/root "$K/principals"
	record 0644 /etc/hostname "$K/hostname"
	record 0600 /run/airlock-entropy "$K/entropy"
} >"$K/records"
T1=$(now)
gput /run/airlock-records "$K/records"
T_WRITE=$(since "$T1")
T2=$(now)
out=$(gexec "/usr/local/sbin/airlock-activate --clock $(date +%s.%N) </run/airlock-records; rc=\$?; rm -f /run/airlock-records; exit \$rc") ||
	fail "airlock-activate: $out"
T_ACTIVATE=$(since "$T2")
log "identity written in $T_WRITE s, airlock-activate took $T_ACTIVATE s"

SSH=(ssh -o BatchMode=yes -o ConnectTimeout=10 -o UserKnownHostsFile="$K/known_hosts"
	-o StrictHostKeyChecking=yes -o CertificateFile="$K/user-cert.pub" -i "$K/user" "root@$IP")
out=$("${SSH[@]}" 'hostname; test -e /run/airlock-entropy && echo entropy-left || true') || fail "ssh with certificate failed"
[ "$out" = "$NAME" ] || fail "unexpected ssh output: $out"
T_SSH=$(since "$T0")
log "ssh with user certificate ok (hostname $out); boot to SSH $T_SSH s"

# A key that is not certified by the user CA must be refused.
ssh-keygen -q -t ed25519 -N '' -f "$K/stranger"
if ssh -o BatchMode=yes -o UserKnownHostsFile="$K/known_hosts" -o StrictHostKeyChecking=yes \
	-i "$K/stranger" "root@$IP" true 2>/dev/null; then
	fail "ssh with an uncertified key was accepted"
fi
log "uncertified key refused"

# ---- isolation -------------------------------------------------------------------------
python3 -m http.server "$PORT" --bind 0.0.0.0 --directory "$TMP" >/dev/null 2>&1 &
HTTP_PID=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
curl -s -o /dev/null "http://$HOST_IP:$PORT/" || fail "control: host http server not reachable from the host"
curl -s -o /dev/null -m 10 "http://$IP/" || fail "control: guest nginx not reachable from the host"

probe() { # probe URL: the guest must NOT reach it
	if gexec "curl -s -o /dev/null -m 4 $1" >/dev/null; then fail "guest reached $1"; fi
	log "guest cannot reach $1"
}
probe "http://$HOST_IP:$PORT/"
probe "http://10.78.0.1:$PORT/"
for addr in $(ip -4 -o addr show scope global | awk '{ sub("/.*", "", $4); print $4 }'); do
	case "$addr" in 10.77.0.1 | 10.78.0.1) continue ;; esac
	probe "http://$addr:$PORT/" # the host's own addresses (eth0, ...)
done
# The outside, by IP (the guest has no resolver configured anyway).
if OUT_IP=$(getent ahostsv4 deb.debian.org | awk 'NR == 1 { print $1 }') && [ -n "$OUT_IP" ] &&
	curl -s -o /dev/null -m 10 "http://$OUT_IP/" -H 'Host: deb.debian.org'; then
	probe "http://$OUT_IP/"
else
	log "skipped outside probe: the host itself cannot reach deb.debian.org"
fi

# Informational: does opening egress for this sandbox work on this host?
if [ -n "${OUT_IP:-}" ] && nft list set inet airlock egress_open >/dev/null 2>&1; then
	nft add element inet airlock egress_open "{ $IP timeout 2m }"
	if gexec "curl -s -o /dev/null -m 4 http://$OUT_IP/ -H 'Host: deb.debian.org'" >/dev/null; then
		log "info: with $IP in egress_open the guest reaches the outside"
	else
		log "info: with $IP in egress_open the guest still cannot reach the outside" \
			"(ip_forward=$(cat /proc/sys/net/ipv4/ip_forward); libvirt's isolated-network REJECT rules; see deploy/images/README.md)"
	fi
	nft delete element inet airlock egress_open "{ $IP }"
fi

log "PASS: agent ${T_AGENT}s, lease ${T_LEASE}s, identity ${T_WRITE}s + activate ${T_ACTIVATE}s, boot to SSH ${T_SSH}s"
