package playbook

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/airlock-dev/airlock/activities/changes"
)

// reloadRules map configuration paths to the unit reloaded or restarted
// when they change. Paths not listed fall back to /etc/<name>/** and
// /etc/default/<name> → restart <name>.service, if that unit exists.
var reloadRules = []struct{ glob, unit, state string }{
	{"/etc/nginx/**", "nginx.service", "reloaded"},
	{"/etc/ssh/sshd_config", "ssh.service", "reloaded"},
	{"/etc/ssh/sshd_config.d/**", "ssh.service", "reloaded"},
	{"/etc/apache2/**", "apache2.service", "reloaded"},
	{"/etc/haproxy/**", "haproxy.service", "reloaded"},
	{"/etc/postfix/**", "postfix.service", "reloaded"},
	{"/etc/rsyslog.conf", "rsyslog.service", "restarted"},
	{"/etc/rsyslog.d/**", "rsyslog.service", "restarted"},
	{"/etc/systemd/journald.conf", "systemd-journald.service", "restarted"},
	{"/etc/systemd/journald.conf.d/**", "systemd-journald.service", "restarted"},
}

// validators check a file before copy moves it into place.
var validators = []struct{ glob, cmd string }{
	{"/etc/sudoers", "/usr/sbin/visudo -cf %s"},
	{"/etc/sudoers.d/*", "/usr/sbin/visudo -cf %s"},
	{"/etc/ssh/sshd_config", "/usr/sbin/sshd -t -f %s"},
}

var unitDirs = []changes.Path{"/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"}

func yamlSafe(p changes.Path) bool {
	return utf8.ValidString(string(p)) && !strings.ContainsRune(string(p), 0)
}

func (g *gen) fileTasks() error {
	var missing []string
	removed := map[changes.Path]bool{}
	for _, f := range g.c.Files {
		if f.Action == changes.Removed {
			removed[f.Path] = true
		}
	}
	var removals, dirs, others []changes.FileChange
	for _, f := range g.c.Files {
		if !yamlSafe(f.Path) {
			g.flag("not reproduced: %s cannot be written in YAML (invalid UTF-8)", f.Path.Display())
			continue
		}
		switch {
		case f.Action == changes.Removed:
			if !removed[f.Path.Dir()] || f.Path == "/" {
				removals = append(removals, f) // children go with their directory
			}
			continue
		case f.Type:
			removals = append(removals, f) // replaced by another kind of entry
		}
		if f.After.Type == changes.TypeDir {
			dirs = append(dirs, f)
		} else {
			others = append(others, f)
		}
	}
	for _, f := range removals {
		g.task("Remove "+f.Path.Display(), "ansible.builtin.file", mapping("path", string(f.Path), "state", "absent"))
	}
	for _, f := range dirs {
		a := f.After
		g.task("Directory "+f.Path.Display(), "ansible.builtin.file", mapping("path", string(f.Path), "state", "directory",
			"owner", g.owner(a.UID), "group", g.group(a.GID), "mode", mode(a.Mode)))
	}
	for _, f := range others {
		if err := g.entryTask(f, &missing); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("file contents not provided for %d path(s): %s", len(missing), strings.Join(missing, ", "))
	}
	return nil
}

func (g *gen) entryTask(f changes.FileChange, missing *[]string) error {
	a := f.After
	p := string(f.Path)
	switch a.Type {
	case changes.TypeFile:
		if f.Action == changes.Modified && !f.Content && !f.Type {
			g.task("Permissions of "+f.Path.Display(), "ansible.builtin.file", mapping("path", p, "state", "file",
				"owner", g.owner(a.UID), "group", g.group(a.GID), "mode", mode(a.Mode)))
			return nil
		}
		if a.SHA256 == "" {
			g.flag("not reproduced: %s was not hashed (%s); copy it separately", f.Path.Display(), strings.TrimSpace(string(a.Hash)+" "+a.HashErr))
			return nil
		}
		data, ok := g.contents[p]
		if !ok {
			*missing = append(*missing, f.Path.Display())
			return nil
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != a.SHA256 {
			return fmt.Errorf("content of %s does not match its manifest hash", f.Path.Display())
		}
		src := FilesDir + "/" + a.SHA256
		g.files[src] = data
		args := mapping("src", src, "dest", p, "owner", g.owner(a.UID), "group", g.group(a.GID), "mode", mode(a.Mode))
		for _, v := range validators {
			if changes.Match(v.glob, f.Path) {
				set(args, "validate", str(v.cmd))
			}
		}
		t := g.task("Copy "+f.Path.Display(), "ansible.builtin.copy", args)
		g.notify(t, f.Path)
	case changes.TypeSymlink:
		args := mapping("path", p, "src", string(a.Target), "state", "link", "force", true)
		if a.UID != 0 || a.GID != 0 {
			set(args, "owner", str(g.owner(a.UID)))
			set(args, "group", str(g.group(a.GID)))
		}
		t := g.task("Link "+f.Path.Display()+" -> "+a.Target.Display(), "ansible.builtin.file", args)
		g.notify(t, f.Path)
	case changes.TypeFIFO:
		t := g.task("FIFO "+f.Path.Display(), "ansible.builtin.command",
			mapping("argv", []string{"mkfifo", "-m", fmt.Sprintf("%04o", a.Mode), "--", p}, "creates", p))
		g.markCommand(t, "no module creates FIFOs; guarded by creates")
		if a.UID != 0 || a.GID != 0 {
			g.flag("not reproduced: owner %d:%d of FIFO %s", a.UID, a.GID, f.Path.Display())
		}
	case changes.TypeSocket:
		// made by the process that listens on it
	default:
		g.flag("not reproduced: %s is a %s", f.Path.Display(), a.Type)
	}
	return nil
}

// notify attaches the handlers that a change of path p needs.
func (g *gen) notify(t *yaml.Node, p changes.Path) {
	var names []string
	if unit, ok := unitFile(p); ok {
		names = append(names, g.handler(handlerDaemonReload, "ansible.builtin.systemd", mapping("daemon_reload", true)))
		if g.active(unit) && !g.started[unit] {
			names = append(names, g.unitHandler(unit, "restarted"))
		}
	}
	if unit, state := configOwner(p, g.c.AfterUnits); unit != "" && g.active(unit) {
		names = append(names, g.unitHandler(unit, state))
	}
	if p.Dir() == "/etc/sysctl.d" || p == "/etc/sysctl.conf" {
		h := g.handler(handlerSysctl, "ansible.builtin.command", mapping("cmd", "sysctl --system"), "changed_when", true)
		if g.handlers[handlerSysctl].HeadComment == "" {
			g.handlers[handlerSysctl].HeadComment = "# AIRLOCK: command handler (ansible-core 2.14 has no sysctl module); runs only when a sysctl file changed"
			g.flag("not idempotent by construction: handler %q runs `sysctl --system` when a sysctl file changes (ansible-core 2.14 has no sysctl module and ansible.posix is not installed)", handlerSysctl)
		}
		names = append(names, h)
	}
	if len(names) > 0 {
		sort.Strings(names)
		set(t, "notify", strs(dedupe(names)))
	}
}

func dedupe(ss []string) []string {
	var out []string
	for i, s := range ss {
		if i == 0 || s != ss[i-1] {
			out = append(out, s)
		}
	}
	return out
}

func (g *gen) handler(name, module string, args *yaml.Node, extra ...any) string {
	if g.handlers[name] == nil {
		g.handlers[name] = mapping(append([]any{"name", name, module, args}, extra...)...)
	}
	return name
}

func (g *gen) unitHandler(unit, state string) string {
	verb := "Restart "
	if state == "reloaded" {
		verb = "Reload "
	}
	return g.handler(verb+unit, "ansible.builtin.systemd", mapping("name", unit, "state", state))
}

func (g *gen) active(unit string) bool {
	u, ok := g.c.AfterUnits[unit]
	return ok && (u.Active == "active" || u.Active == "reloading" || u.Active == "activating")
}

// unitFile reports whether p is a unit file or drop-in, and for which unit.
func unitFile(p changes.Path) (string, bool) {
	for _, d := range unitDirs {
		if p.Dir() == d && strings.Contains(path.Base(string(p)), ".") {
			return path.Base(string(p)), true
		}
		if dd := p.Dir(); dd.Dir() == d && strings.HasSuffix(string(dd), ".d") && strings.HasSuffix(string(p), ".conf") {
			return strings.TrimSuffix(path.Base(string(dd)), ".d"), true
		}
	}
	return "", false
}

func configOwner(p changes.Path, units map[string]changes.Unit) (string, string) {
	for _, r := range reloadRules {
		if changes.Match(r.glob, p) {
			return r.unit, r.state
		}
	}
	rest, ok := strings.CutPrefix(string(p), "/etc/")
	if !ok {
		return "", ""
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(rest, "default/"), "/")
	if strings.HasPrefix(rest, "default/") && strings.Contains(strings.TrimPrefix(rest, "default/"), "/") {
		return "", ""
	}
	if _, ok := units[name+".service"]; ok && name != "" {
		return name + ".service", "restarted"
	}
	return "", ""
}

// servicesDown stops, disables and masks units before packages and files
// change; units whose unit file is removed are guarded by a stat so that a
// second run (file already gone) stays green.
func (g *gen) servicesDown() {
	folded := map[changes.Path]bool{}
	for _, grp := range g.c.Folded {
		for _, p := range grp.Paths {
			folded[p] = true
		}
	}
	for i, s := range g.c.Services {
		gone := s.After == nil || s.After.FileState == ""
		if gone {
			if s.Before == nil || (s.Activity != "stopped" && !enabledState(s.Before.FileState)) {
				continue
			}
			unitPath := g.removedUnitPath(s.Unit)
			if unitPath == "" || folded[unitPath] {
				continue // removed with its package, or not a file we manage
			}
			reg := fmt.Sprintf("airlock_unit_%d", i)
			g.task("Check whether "+s.Unit+" still exists", "ansible.builtin.stat", mapping("path", string(unitPath)), "register", reg)
			g.task("Stop and disable "+s.Unit, "ansible.builtin.systemd",
				mapping("name", s.Unit, "state", "stopped", "enabled", false), "when", reg+".stat.exists")
			continue
		}
		args := mapping("name", s.Unit)
		switch s.Enablement {
		case "masked":
			set(args, "masked", boolean(true))
		case "disabled":
			set(args, "enabled", boolean(false))
		}
		if s.Activity == "stopped" {
			set(args, "state", str("stopped"))
		}
		if len(args.Content) > 2 {
			g.task(verbs(args)+" "+s.Unit, "ansible.builtin.systemd", args)
		}
	}
}

func (g *gen) removedUnitPath(unit string) changes.Path {
	want := map[changes.Path]bool{}
	for _, d := range unitDirs {
		want[d+"/"+changes.Path(unit)] = true
	}
	for _, f := range g.c.Files {
		if f.Action == changes.Removed && want[f.Path] {
			return f.Path
		}
	}
	for _, grp := range g.c.Folded {
		for _, p := range grp.Paths {
			if want[p] {
				return p
			}
		}
	}
	return ""
}

func enabledState(s string) bool { return s == "enabled" || s == "enabled-runtime" }

// servicesUp enables, unmasks and starts units after everything else, once
// pending handlers (daemon-reload for new unit files) have run.
func (g *gen) servicesUp() {
	var ups []*yaml.Node
	var names []string
	for _, s := range g.c.Services {
		if s.After == nil || s.After.FileState == "" {
			continue
		}
		args := mapping("name", s.Unit)
		if s.Enablement == "unmasked" {
			set(args, "masked", boolean(false))
		}
		if s.Enablement == "enabled" || s.Enablement == "unmasked" || s.Enablement == "added" {
			if enabledState(s.After.FileState) {
				set(args, "enabled", boolean(true))
			}
		}
		if s.Activity == "started" {
			set(args, "state", str("started"))
		}
		if len(args.Content) > 2 {
			ups = append(ups, args)
			names = append(names, verbs(args)+" "+s.Unit)
		}
	}
	if len(ups) == 0 {
		return
	}
	if len(g.handlers) > 0 {
		g.task("Run pending handlers before starting units", "ansible.builtin.meta", str("flush_handlers"))
	}
	for i, args := range ups {
		g.task(names[i], "ansible.builtin.systemd", args)
	}
}

func verbs(args *yaml.Node) string {
	var v []string
	for i := 0; i+1 < len(args.Content); i += 2 {
		k, val := args.Content[i].Value, args.Content[i+1].Value
		switch {
		case k == "masked" && val == "true":
			v = append(v, "Mask")
		case k == "masked":
			v = append(v, "Unmask")
		case k == "enabled" && val == "true":
			v = append(v, "Enable")
		case k == "enabled":
			v = append(v, "Disable")
		case k == "state" && val == "started":
			v = append(v, "Start")
		case k == "state":
			v = append(v, "Stop")
		}
	}
	s := strings.Join(v, " and ")
	return strings.ToUpper(s[:1]) + strings.ToLower(s[1:])
}
