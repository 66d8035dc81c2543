package tools

import (
	"fmt"
	"regexp"
	"strings"
)

// DenyRule is one destructive-command pattern and what to tell the model.
// The deny-list guards against accidents and obvious mistakes; the
// sandbox (a disposable VM with no network) is the security boundary.
type DenyRule struct {
	ID      string
	Pattern *regexp.Regexp
	Why     string // explanation the model can act on
}

// cmd anchors a command word at the start of a shell command: the start
// of the script or after ; & | ( ` $( or a newline, optionally behind
// sudo/env/nohup/exec/time/command.
const cmd = `(?m)(?:^|[;&|(\x60]|\$\()\s*(?:(?:sudo|env|nohup|exec|time|command|builtin)\s+(?:-\S+\s+)*)*`

// top-level system directories a recursive rm/chmod/chown must not hit.
const topDirs = `(?:bin|boot|dev|etc|home|lib|lib32|lib64|opt|proc|root|run|sbin|srv|sys|usr|var)`

// rootTarget matches / or /* or a top-level system directory as a whole
// argument (optionally quoted, with a trailing / or /*).
const rootTarget = `(?:^|\s)['"]?/(?:\*|` + topDirs + `/?\*?)?['"]?(?:\s|$|[;&|)])`

var denyRules = []DenyRule{
	{"rm-root", regexp.MustCompile(cmd + `rm\s+(?:-[a-zA-Z]*[rR][a-zA-Z]*\s+|--recursive\s+|-[a-zA-Z]*\s+|--\S+\s+)*[^;&|\n]*?` + rootTarget),
		"recursive rm of / or of a top-level system directory would destroy the sandbox. Remove the specific files or subdirectories you mean (e.g. rm -rf /etc/nginx/sites-enabled/default)."},
	{"rm-no-preserve-root", regexp.MustCompile(cmd + `rm\s[^\n;&|]*--no-preserve-root`),
		"--no-preserve-root is never needed for a configuration change. Remove specific paths instead."},
	{"find-delete-root", regexp.MustCompile(cmd + `find\s+/\s[^\n;&|]*-delete`),
		"find / ... -delete can remove files anywhere. Narrow the starting directory (e.g. find /var/log/myapp -name '*.gz' -delete)."},
	{"mkfs", regexp.MustCompile(cmd + `(?:mkfs(?:\.\w+)?|mke2fs|mkswap|wipefs|mkdosfs|mkfs\.xfs)\b`),
		"creating or wiping a filesystem destroys the sandbox's disk. Sysadmin tasks here change configuration and packages, not disks."},
	{"partition", regexp.MustCompile(cmd + `(?:fdisk|sfdisk|sgdisk|gdisk|parted|cfdisk)\b[^\n;&|]*/dev/`),
		"repartitioning a disk destroys the sandbox. Disk layout is out of scope for a sandboxed change."},
	{"dd-device", regexp.MustCompile(cmd + `dd\s[^\n;&|]*\bof=/dev/(?:[sv]d|hd|xvd|nvme|mmcblk|dm-|md|loop|mapper/|disk/|root|mem|kmem|port)`),
		"dd onto a block device overwrites the disk. Write to a regular file instead (of=/tmp/file) if you need dd at all."},
	{"redirect-device", regexp.MustCompile(`>\s*/dev/(?:[sv]d[a-z]|hd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|dm-\d|mem\b|kmem\b|port\b)`),
		"redirecting output onto a disk device overwrites it. Write to a regular file instead."},
	{"shred-device", regexp.MustCompile(cmd + `(?:shred|blkdiscard)\b[^\n;&|]*/dev/`),
		"shredding or discarding a device destroys the disk."},
	{"power", regexp.MustCompile(cmd + `(?:shutdown|reboot|poweroff|halt|kexec)\b|` + cmd + `(?:systemctl|loginctl)\s+(?:-\S+\s+)*(?:reboot|poweroff|halt|kexec|suspend|hibernate|emergency|rescue|isolate\s+(?:rescue|emergency|poweroff|reboot|halt))\b|` + cmd + `(?:telinit|init)\s+[0156sS]\b`),
		"shutting down or rebooting cuts Airlock's connection to the sandbox. To restart a service use systemctl restart <unit>; to restart the whole sandbox use stop_sandbox then start_sandbox."},
	{"sysrq", regexp.MustCompile(`/proc/sysrq-trigger`),
		"the sysrq trigger can crash or reboot the kernel. Use systemctl for services."},
	{"recursive-perms-root", regexp.MustCompile(cmd + `(?:chmod|chown|chgrp|setfacl)\s+(?:-[a-zA-Z]*\s+|--\S+\s+)*(?:-[a-zA-Z]*R[a-zA-Z]*|--recursive)\b[^\n;&|]*?` + rootTarget),
		"recursively changing permissions or ownership of / or a top-level system directory breaks the system (sudo, sshd and many services check them). Change the specific paths you need."},
	{"ssh-lockout", regexp.MustCompile(cmd + `(?:systemctl|service)\s+(?:-\S+\s+)*(?:stop|disable|mask|kill)\s+(?:--now\s+)?(?:ssh|sshd|ssh\.service|sshd\.service|ssh\.socket)\b|` + cmd + `(?:pkill|killall)\s+(?:-\S+\s+)*sshd?\b|` + cmd + `(?:apt|apt-get|dpkg)\s[^\n;&|]*(?:remove|purge|-r|-P)\s[^\n;&|]*\b(?:openssh-server|qemu-guest-agent|systemd)\b`),
		"this would cut Airlock's SSH access to the sandbox (or remove what it needs). Keep ssh running; configure other services instead."},
	{"airlock-identity", regexp.MustCompile(`/etc/ssh/airlock\b|/etc/ssh/sshd_config\.d/airlock\.conf`),
		"/etc/ssh/airlock and sshd_config.d/airlock.conf hold Airlock's access to the sandbox; do not change them."},
	{"network-down", regexp.MustCompile(cmd + `(?:ip\s+link\s+set\s+\S+\s+down|ip\s+(?:addr|address)\s+flush|ifdown|ifconfig\s+\S+\s+down|nmcli\s+(?:networking\s+off|device\s+disconnect))\b|` + cmd + `(?:iptables|ip6tables)\s+(?:-\S+\s+)*-P\s+(?:INPUT|OUTPUT)\s+DROP\b`),
		"this would cut the sandbox's network and with it Airlock's SSH connection. Network changes must keep SSH from the host working."},
}

// CheckCommand returns an error explaining the refusal if the script
// matches a destructive pattern, or nil.
func CheckCommand(script string) error {
	s := strings.ReplaceAll(script, "\\\n", " ")
	if m := forkBomb(s); m != "" {
		return &DeniedError{Rule: "fork-bomb", Match: m, Why: "this is a fork bomb: a function that pipes into itself in the background exhausts the sandbox's processes and hangs it."}
	}
	for _, r := range denyRules {
		if m := r.Pattern.FindString(s); m != "" {
			return &DeniedError{Rule: r.ID, Match: strings.TrimSpace(m), Why: r.Why}
		}
	}
	return nil
}

// DeniedError is a command refused by the deny-list.
type DeniedError struct {
	Rule  string
	Match string
	Why   string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("refused by Airlock's destructive-command deny-list (rule %s, matched %q): %s", e.Rule, clip(e.Match, 80), e.Why)
}

// DenyRules lists the rules (for documentation and tests).
func DenyRules() []DenyRule { return append([]DenyRule(nil), denyRules...) }

var funcDefRe = regexp.MustCompile(`([A-Za-z_:][A-Za-z0-9_:]*)\s*\(\)\s*\{([^}]*)\}`)

// forkBomb finds a shell function whose body pipes into itself and runs
// in the background, such as :(){ :|:& };: (RE2 has no back-references,
// so the self-reference is checked here).
func forkBomb(s string) string {
	for _, m := range funcDefRe.FindAllStringSubmatch(s, -1) {
		name, body := regexp.QuoteMeta(m[1]), m[2]
		self := regexp.MustCompile(`(?:^|[^A-Za-z0-9_:])` + name + `\s*\|\s*` + name + `\s*&`)
		if self.MatchString(body) {
			return m[0]
		}
	}
	return ""
}
