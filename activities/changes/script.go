package changes

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
)

//go:embed manifest.sh
var manifestScript string

// BaselineIndexPath is where callers upload the baseline index (see
// Manifest.BaselineIndex) before running the second manifest. It lives under
// an excluded directory so that it never shows up in the walk.
const BaselineIndexPath = "/var/lib/airlock-agent/baseline.idx"

// DefaultHashLimit is the largest file that is hashed (32 MiB). Bigger
// regular files are recorded with HashLarge and never opened.
const DefaultHashLimit = 32 << 20

// DefaultExcludes are the guest paths that the manifest never walks. Each is
// a `find -path` pattern on the guest-absolute path (globs allowed); a match
// is pruned with everything under it. The list is deliberately explicit:
//
//   - kernel and runtime file systems: /proc /sys /dev /run
//   - scratch space: /tmp /var/tmp
//   - caches that apt and ldconfig rebuild: /var/cache/apt /var/lib/apt/lists
//     /var/cache/ldconfig /var/cache/man /var/cache/debconf/*-old
//   - logs, journals and their state: /var/log (which includes /var/log/journal)
//   - per-boot and per-clone state: /var/lib/systemd/random-seed
//     /var/lib/systemd/timers /var/lib/systemd/timesync /var/lib/dhcp
//     /var/lib/systemd/coredump /etc/machine-id /var/lib/dbus/machine-id
//     /etc/hostname
//   - the sandbox identity written by Airlock (host key, certificate, CA,
//     principals), which differs on every clone: /etc/ssh/airlock
//   - Airlock's own in-guest state (the baseline index): /var/lib/airlock-agent
//   - swap files: /swapfile
var DefaultExcludes = []string{
	"/proc", "/sys", "/dev", "/run",
	"/tmp", "/var/tmp",
	"/var/cache/apt", "/var/lib/apt/lists", "/var/cache/ldconfig", "/var/cache/man",
	"/var/cache/debconf/*-old",
	"/var/log",
	"/var/lib/systemd/random-seed", "/var/lib/systemd/timers", "/var/lib/systemd/timesync",
	"/var/lib/systemd/coredump", "/var/lib/dhcp",
	"/etc/machine-id", "/var/lib/dbus/machine-id", "/etc/hostname",
	"/etc/ssh/airlock",
	"/var/lib/airlock-agent",
	"/swapfile",
}

// ScriptOptions configure ManifestScript. The zero value takes a full
// manifest of "/" with every section and no baseline.
type ScriptOptions struct {
	// Root is the directory walked as "/" (default "/"). Tests point it at a
	// fixture tree; all sections read their files below it.
	Root string
	// Excludes replaces DefaultExcludes when non-nil; ExtraExcludes adds to
	// whichever list is in effect.
	Excludes      []string
	ExtraExcludes []string
	// HashLimit is the largest file hashed (default DefaultHashLimit).
	HashLimit int64
	// BaselineIndex is the path (on the machine running the script) of a
	// baseline index; files whose inode, size, mtime and ctime match it keep
	// their old hash. Empty or missing means hash everything.
	BaselineIndex string
	// Systemctl is the command used for the services section (default
	// ["systemctl"]). Tests substitute a fake.
	Systemctl []string
	// ProcSys is where current sysctl values are read (default /proc/sys).
	ProcSys string
	// Skip* turn sections off.
	SkipPackages, SkipServices, SkipUsers, SkipCron, SkipSysctl bool
}

// ManifestScript returns the bash script that prints a manifest; run it as
// root with `bash -s` and feed its stdout to ParseManifest. Options are
// passed as shell assignments in front of the embedded script, each value
// single-quoted, so no option can inject shell code.
func ManifestScript(opts ScriptOptions) string {
	root := opts.Root
	if root == "" {
		root = "/"
	}
	excl := opts.Excludes
	if excl == nil {
		excl = DefaultExcludes
	}
	excl = append(append([]string(nil), excl...), opts.ExtraExcludes...)
	limit := opts.HashLimit
	if limit <= 0 {
		limit = DefaultHashLimit
	}
	sysctl := opts.Systemctl
	if len(sysctl) == 0 {
		sysctl = []string{"systemctl"}
	}
	procSys := opts.ProcSys
	if procSys == "" {
		procSys = "/proc/sys"
	}
	flag := func(skip bool) string {
		if skip {
			return "0"
		}
		return "1"
	}
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	fmt.Fprintf(&b, "AIRLOCK_ROOT=%s\n", shellQuote(root))
	fmt.Fprintf(&b, "AIRLOCK_HASH_LIMIT=%s\n", strconv.FormatInt(limit, 10))
	fmt.Fprintf(&b, "AIRLOCK_BASELINE=%s\n", shellQuote(opts.BaselineIndex))
	fmt.Fprintf(&b, "AIRLOCK_EXCLUDES=(%s)\n", shellWords(excl))
	fmt.Fprintf(&b, "AIRLOCK_SYSTEMCTL=(%s)\n", shellWords(sysctl))
	fmt.Fprintf(&b, "AIRLOCK_PROCSYS=%s\n", shellQuote(procSys))
	fmt.Fprintf(&b, "AIRLOCK_PACKAGES=%s AIRLOCK_SERVICES=%s AIRLOCK_USERS=%s AIRLOCK_CRON=%s AIRLOCK_SYSCTL=%s\n",
		flag(opts.SkipPackages), flag(opts.SkipServices), flag(opts.SkipUsers), flag(opts.SkipCron), flag(opts.SkipSysctl))
	b.WriteString(manifestScript)
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellWords(ws []string) string {
	q := make([]string, len(ws))
	for i, w := range ws {
		q[i] = shellQuote(w)
	}
	return strings.Join(q, " ")
}
