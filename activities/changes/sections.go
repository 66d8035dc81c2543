package changes

import (
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func diffPackages(before, after *Manifest) []PackageChange {
	if before.Packages == nil || after.Packages == nil {
		return nil
	}
	var out []PackageChange
	for name, a := range after.Packages {
		b, had := before.Packages[name]
		switch {
		case a.Installed() && (!had || !b.Installed()):
			out = append(out, PackageChange{Name: name, Arch: a.Arch, Action: Installed, To: a.Version, Auto: a.Auto})
		case a.Installed() && b.Version != a.Version:
			act := Upgraded
			if CompareVersions(a.Version, b.Version) < 0 {
				act = Downgraded
			}
			out = append(out, PackageChange{Name: name, Arch: a.Arch, Action: act, From: b.Version, To: a.Version, Auto: a.Auto})
		case !a.Installed() && had && b.Installed():
			out = append(out, PackageChange{Name: name, Arch: b.Arch, Action: Removed, From: b.Version})
		case !a.Installed() && had && strings.HasPrefix(b.Status, "rc") && !strings.HasPrefix(a.Status, "rc"):
			out = append(out, PackageChange{Name: name, Arch: b.Arch, Action: Purged, From: b.Version})
		}
	}
	for name, b := range before.Packages {
		if _, ok := after.Packages[name]; !ok && (b.Installed() || strings.HasPrefix(b.Status, "rc")) {
			out = append(out, PackageChange{Name: name, Arch: b.Arch, Action: Purged, From: b.Version})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func activeUp(s string) bool { return s == "active" || s == "reloading" || s == "activating" }

func enabledState(s string) bool { return s == "enabled" || s == "enabled-runtime" }

// untrackedActivity: unit-file states whose start/stop is not a managed
// decision (run on demand, generated, or an alias of a template).
var untrackedActivity = map[string]bool{"": true, "static": true, "transient": true, "generated": true, "indirect": true}

func diffUnits(before, after *Manifest, opts DiffOptions) []ServiceChange {
	if before.Units == nil || after.Units == nil {
		return nil
	}
	names := map[string]bool{}
	for n := range before.Units {
		names[n] = true
	}
	for n := range after.Units {
		names[n] = true
	}
	var out []ServiceChange
	for n := range names {
		if matchUnit(opts.IgnoreUnits, n) {
			continue
		}
		b, bok := before.Units[n]
		a, aok := after.Units[n]
		sc := ServiceChange{Unit: n}
		if bok {
			sc.Before = &b
		}
		if aok {
			sc.After = &a
		}
		bs, as := b.FileState, a.FileState
		switch {
		case bs == as:
		case bs == "" && as != "":
			sc.Enablement = "added"
		case bs != "" && as == "":
			sc.Enablement = "removed"
		case as == "masked":
			sc.Enablement = "masked"
		case bs == "masked":
			sc.Enablement = "unmasked"
		case enabledState(as) && !enabledState(bs):
			sc.Enablement = "enabled"
		case !enabledState(as) && enabledState(bs):
			sc.Enablement = "disabled"
		default:
			sc.Enablement = bs + "->" + as
		}
		tracked := !untrackedActivity[as] || !untrackedActivity[bs] || (bs == "" && as != "")
		if tracked {
			switch {
			case !activeUp(b.Active) && activeUp(a.Active):
				sc.Activity = "started"
			case activeUp(b.Active) && !activeUp(a.Active):
				sc.Activity = "stopped"
			}
		}
		if sc.Enablement != "" || sc.Activity != "" {
			out = append(out, sc)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unit < out[j].Unit })
	return out
}

func matchUnit(pats []string, name string) bool {
	for _, p := range pats {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

func supplementary(groups map[string]Group, user string) []string {
	var out []string
	for _, g := range groups {
		for _, m := range g.Members {
			if m == user {
				out = append(out, g.Name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

func diffAccounts(before, after *Manifest) ([]UserChange, []GroupChange) {
	if before.Users == nil || after.Users == nil {
		return nil, nil
	}
	var users []UserChange
	for n, a := range after.Users {
		a := a
		ga := supplementary(after.Groups, n)
		b, ok := before.Users[n]
		if !ok {
			users = append(users, UserChange{Name: n, Action: Added, After: &a, GroupsAfter: ga})
			continue
		}
		gb := supplementary(before.Groups, n)
		var fields []string
		add := func(name string, differ bool) {
			if differ {
				fields = append(fields, name)
			}
		}
		add("uid", a.UID != b.UID)
		add("gid", a.GID != b.GID)
		add("gecos", a.Gecos != b.Gecos)
		add("home", a.Home != b.Home)
		add("shell", a.Shell != b.Shell)
		add("password", a.Password != b.Password || (a.Password == "set" && a.LastChg != b.LastChg))
		add("groups", strings.Join(ga, ",") != strings.Join(gb, ","))
		if len(fields) > 0 {
			b := b
			users = append(users, UserChange{Name: n, Action: Changed, Before: &b, After: &a, Fields: fields,
				GroupsBefore: gb, GroupsAfter: ga})
		}
	}
	for n, b := range before.Users {
		if _, ok := after.Users[n]; !ok {
			b := b
			users = append(users, UserChange{Name: n, Action: Removed, Before: &b, GroupsBefore: supplementary(before.Groups, n)})
		}
	}
	sort.Slice(users, func(i, j int) bool { return users[i].Name < users[j].Name })
	var groups []GroupChange
	for n, a := range after.Groups {
		a := a
		b, ok := before.Groups[n]
		if !ok {
			groups = append(groups, GroupChange{Name: n, Action: Added, After: &a})
			continue
		}
		var fields []string
		if a.GID != b.GID {
			fields = append(fields, "gid")
		}
		if strings.Join(a.Members, ",") != strings.Join(b.Members, ",") {
			fields = append(fields, "members")
		}
		if len(fields) > 0 {
			b := b
			groups = append(groups, GroupChange{Name: n, Action: Changed, Before: &b, After: &a, Fields: fields})
		}
	}
	for n, b := range before.Groups {
		if _, ok := after.Groups[n]; !ok {
			b := b
			groups = append(groups, GroupChange{Name: n, Action: Removed, Before: &b})
		}
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].Name < groups[j].Name })
	return users, groups
}

// UserCrontabDir holds per-user crontabs, one file per user.
const UserCrontabDir = "/var/spool/cron/crontabs"

var envLine = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$`)

// ParseCrontab returns the meaningful lines of a crontab. User crontabs
// (under UserCrontabDir) have no user column; system crontabs do.
func ParseCrontab(src Path, content string) []CronEntry {
	userTab := src.Dir() == UserCrontabDir
	var out []CronEntry
	for _, l := range strings.Split(content, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		e := CronEntry{Source: src, Line: l}
		if userTab {
			e.User = path.Base(string(src))
		}
		if m := envLine.FindStringSubmatch(l); m != nil {
			e.Env, e.Name, e.Command = true, m[1], unquote(m[2])
			out = append(out, e)
			continue
		}
		f := strings.Fields(l)
		n := 5
		if strings.HasPrefix(f[0], "@") {
			n = 1
		}
		if !userTab {
			n++
		}
		if len(f) <= n {
			continue // malformed: cron ignores it too
		}
		sched := f[:n]
		if !userTab {
			e.User = sched[n-1]
			sched = sched[:n-1]
		}
		e.Schedule = strings.Join(sched, " ")
		// The command keeps its own spacing: take the rest of the raw line.
		rest := l
		for i := 0; i < n; i++ {
			rest = strings.TrimLeft(rest, " \t")
			rest = rest[strings.IndexAny(rest+" ", " \t"):]
		}
		e.Command = strings.TrimSpace(rest)
		out = append(out, e)
	}
	return out
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// key identifies an entry independent of spacing and of comments (the cron
// module adds "#Ansible:" markers).
func (e CronEntry) key() string {
	if e.Env {
		return e.User + "\x00env\x00" + e.Name + "=" + e.Command
	}
	return e.User + "\x00" + e.Schedule + "\x00" + e.Command
}

func diffCron(before, after *Manifest) []CronChange {
	if before.Cron == nil || after.Cron == nil {
		return nil
	}
	srcs := map[Path]bool{}
	for s := range before.Cron {
		srcs[s] = true
	}
	for s := range after.Cron {
		srcs[s] = true
	}
	var out []CronChange
	for src := range srcs {
		userTab := src.Dir() == UserCrontabDir
		count := map[string]int{}
		for _, e := range ParseCrontab(src, before.Cron[src]) {
			count[e.key()]++
		}
		for _, e := range ParseCrontab(src, after.Cron[src]) {
			if count[e.key()] > 0 {
				count[e.key()]--
				continue
			}
			out = append(out, CronChange{Action: Added, Entry: e, UserCrontab: userTab})
		}
		for _, e := range ParseCrontab(src, before.Cron[src]) {
			if count[e.key()] > 0 {
				count[e.key()]--
				out = append(out, CronChange{Action: Removed, Entry: e, UserCrontab: userTab})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Entry.Source != out[j].Entry.Source {
			return out[i].Entry.Source < out[j].Entry.Source
		}
		return out[i].Action < out[j].Action
	})
	return out
}

type sysctlSetting struct {
	file  Path
	value string
}

// SysctlConfig returns the effective configured values: /etc/sysctl.d/*.conf
// in name order, then /etc/sysctl.conf, later files overriding earlier ones.
func SysctlConfig(files map[Path]string) map[string]sysctlSetting {
	var names []Path
	for p := range files {
		if p != "/etc/sysctl.conf" {
			names = append(names, p)
		}
	}
	sort.Slice(names, func(i, j int) bool { return path.Base(string(names[i])) < path.Base(string(names[j])) })
	if _, ok := files["/etc/sysctl.conf"]; ok {
		names = append(names, "/etc/sysctl.conf")
	}
	out := map[string]sysctlSetting{}
	for _, p := range names {
		for _, l := range strings.Split(files[p], "\n") {
			l = strings.TrimSpace(l)
			if l == "" || l[0] == '#' || l[0] == ';' {
				continue
			}
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				continue
			}
			k = normKey(strings.TrimPrefix(strings.TrimSpace(k), "-"))
			out[k] = sysctlSetting{file: p, value: normSpace(v)}
		}
	}
	return out
}

func normKey(k string) string {
	if strings.Contains(k, "/") {
		return strings.ReplaceAll(k, "/", ".")
	}
	return k
}

func diffSysctl(before, after *Manifest) []SysctlChange {
	if before.SysctlFiles == nil || after.SysctlFiles == nil {
		return nil
	}
	cb, ca := SysctlConfig(before.SysctlFiles), SysctlConfig(after.SysctlFiles)
	rb, ra := map[string]string{}, map[string]string{}
	for k, v := range before.SysctlValues {
		rb[normKey(k)] = v
	}
	for k, v := range after.SysctlValues {
		ra[normKey(k)] = v
	}
	keys := map[string]bool{}
	for _, m := range []map[string]sysctlSetting{cb, ca} {
		for k := range m {
			keys[k] = true
		}
	}
	for _, m := range []map[string]string{rb, ra} {
		for k := range m {
			keys[k] = true
		}
	}
	var out []SysctlChange
	for k := range keys {
		b, bok := cb[k]
		a, aok := ca[k]
		sc := SysctlChange{Key: k, File: a.file, Before: b.value, After: a.value, RuntimeBefore: rb[k], RuntimeAfter: ra[k]}
		_, rbok := rb[k]
		_, raok := ra[k]
		switch {
		case !bok && aok:
			sc.Action = Added
		case bok && !aok:
			sc.Action = Removed
		case bok && aok && (a.value != b.value || a.file != b.file):
			sc.Action = Changed
		case rbok && raok && rb[k] != ra[k]:
			sc.Action, sc.RuntimeOnly = Changed, true
		default:
			continue
		}
		out = append(out, sc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// CompareVersions compares two Debian package versions like dpkg
// --compare-versions: negative if a < b, zero if equal, positive if a > b.
func CompareVersions(a, b string) int {
	ea, ua, ra := splitVersion(a)
	eb, ub, rb := splitVersion(b)
	if ea != eb {
		if ea < eb {
			return -1
		}
		return 1
	}
	if c := verrevcmp(ua, ub); c != 0 {
		return c
	}
	return verrevcmp(ra, rb)
}

func splitVersion(v string) (epoch int, upstream, revision string) {
	if e, rest, ok := strings.Cut(v, ":"); ok {
		epoch, _ = strconv.Atoi(e)
		v = rest
	}
	if i := strings.LastIndex(v, "-"); i >= 0 {
		return epoch, v[:i], v[i+1:]
	}
	return epoch, v, ""
}

func verOrder(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return 0
	case c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
		return int(c)
	case c == '~':
		return -1
	default:
		return int(c) + 256
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func verrevcmp(a, b string) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		firstDiff := 0
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ac, bc := 0, 0
			if i < len(a) {
				ac = verOrder(a[i])
			}
			if j < len(b) {
				bc = verOrder(b[j])
			}
			if ac != bc {
				return ac - bc
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		for i < len(a) && isDigit(a[i]) && j < len(b) && isDigit(b[j]) {
			if firstDiff == 0 {
				firstDiff = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if firstDiff != 0 {
			return firstDiff
		}
	}
	return 0
}
