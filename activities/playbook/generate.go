// Package playbook turns a classified change (package changes) into an
// Ansible playbook bundle built only from real modules, computes its plan
// hash, and checks it with ansible-playbook --syntax-check and ansible-lint.
//
// The agent's commands are never replayed. Every task is derived from the
// diff: apt for packages, group/user for accounts, file/copy for the file
// system, cron for user crontabs, systemd for units. Where no module fits, a
// clearly marked command task with a creates/removes guard (or a handler
// that only runs on change) is emitted and listed in Bundle.Flags as "not
// idempotent by construction".
package playbook

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/airlock-dev/airlock/activities/changes"
)

// PlaybookFile is the playbook's name inside a bundle; copied files live
// under FilesDir, named by their SHA256.
const (
	PlaybookFile = "playbook.yml"
	FilesDir     = "files"
)

const (
	handlerDaemonReload = "Reload systemd"
	handlerSysctl       = "Apply sysctl settings"
)

type gen struct {
	c        *changes.Changes
	contents map[string][]byte
	files    map[string][]byte
	tasks    []*yaml.Node
	handlers map[string]*yaml.Node
	flags    []string
	started  map[string]bool
}

// Generate builds the bundle for c. The command log (CommandRecord, in
// messages.go) is only read for review flags about runtime-only changes the
// manifest cannot see; it is never turned into tasks.
//
// contents maps guest paths to final file bytes, exactly the paths of
// changes.ContentRequests(c); each must match the manifest hash. Task order: units being stopped or disabled,
// packages, groups and users, files (removals, directories, files, links),
// user cron entries, then units being enabled or started (after pending
// handlers such as a systemd daemon-reload have run).
func Generate(c *changes.Changes, contents map[string][]byte, cmdlog []CommandRecord) (*Bundle, error) {
	g := &gen{c: c, contents: contents, files: map[string][]byte{}, handlers: map[string]*yaml.Node{},
		started: map[string]bool{}}
	for _, s := range c.Services {
		if s.Activity == "started" {
			g.started[s.Unit] = true
		}
	}
	g.servicesDown()
	g.packages()
	g.accounts()
	if err := g.fileTasks(); err != nil {
		return nil, err
	}
	g.cron()
	g.sysctlFlags()
	g.servicesUp()
	g.commandLog(cmdlog)
	return g.bundle()
}

func (g *gen) task(name string, module string, args *yaml.Node, extra ...any) *yaml.Node {
	t := mapping(append([]any{"name", taskName(name), module, args}, extra...)...)
	g.tasks = append(g.tasks, t)
	return t
}

// taskName keeps names readable and inert: Ansible templates task names, so
// Jinja delimiters from file names or commands are broken up (values keep
// them, tagged !unsafe).
func taskName(s string) string {
	return strings.NewReplacer("{{", "{ {", "{%", "{ %", "{#", "{ #", "\n", " ").Replace(s)
}

// wrap splits a comment into lines of at most width bytes at spaces.
func wrap(s string, width int) []string {
	var lines []string
	for len(s) > width {
		i := strings.LastIndexByte(s[:width], ' ')
		if i <= 0 {
			i = width
		}
		lines = append(lines, s[:i])
		s = strings.TrimLeft(s[i:], " ")
	}
	return append(lines, s)
}

func (g *gen) flag(format string, args ...any) {
	g.flags = append(g.flags, fmt.Sprintf(format, args...))
}

// markCommand comments a command task and flags it for review.
func (g *gen) markCommand(t *yaml.Node, why string) {
	t.HeadComment = "# AIRLOCK: command task, not idempotent by construction (" + why + ")"
	g.flag("not idempotent by construction: %q: %s", t.Content[1].Value, why)
}

func (g *gen) packages() {
	var purge, remove, install []string
	downgrade := false
	for _, p := range g.c.Packages {
		switch p.Action {
		case changes.Purged:
			purge = append(purge, p.Name)
		case changes.Removed:
			remove = append(remove, p.Name)
		case changes.Installed:
			if p.Auto {
				continue // comes back as a dependency of a manually installed package
			}
			install = append(install, p.Name+"="+p.To)
		case changes.Upgraded, changes.Downgraded:
			install = append(install, p.Name+"="+p.To)
			downgrade = downgrade || p.Action == changes.Downgraded
		}
	}
	if len(purge) > 0 {
		g.task("Purge packages", "ansible.builtin.apt", mapping("name", purge, "state", "absent", "purge", true))
	}
	if len(remove) > 0 {
		g.task("Remove packages", "ansible.builtin.apt", mapping("name", remove, "state", "absent"))
	}
	if len(install) > 0 {
		args := mapping("name", install, "state", "present")
		if downgrade {
			set(args, "allow_downgrade", boolean(true))
		}
		g.task("Install packages at the captured versions", "ansible.builtin.apt", args)
	}
}

func (g *gen) accounts() {
	var userDel, groupDel []string
	for _, gc := range g.c.Groups {
		switch {
		case gc.Action == changes.Removed:
			groupDel = append(groupDel, gc.Name)
		case gc.Action == changes.Added || contains(gc.Fields, "gid"):
			// membership alone is applied through the members' user tasks
			g.task("Group "+gc.Name, "ansible.builtin.group", mapping("name", gc.Name, "gid", gc.After.GID, "state", "present"))
		}
	}
	for _, uc := range g.c.Users {
		if uc.Action == changes.Removed {
			userDel = append(userDel, uc.Name)
			continue
		}
		u := uc.After
		args := mapping("name", u.Name, "uid", u.UID)
		if grp := g.groupName(u.GID); grp != "" {
			set(args, "group", str(grp))
		}
		if uc.Action == changes.Added || contains(uc.Fields, "groups") {
			removed := false
			for _, gr := range uc.GroupsBefore {
				removed = removed || !contains(uc.GroupsAfter, gr)
			}
			switch {
			case len(uc.GroupsAfter) > 0:
				set(args, "groups", strs(uc.GroupsAfter))
				set(args, "append", boolean(!removed))
			case removed:
				set(args, "groups", str(""))
				set(args, "append", boolean(false))
			}
		}
		set(args, "comment", str(u.Gecos))
		set(args, "home", str(u.Home))
		set(args, "shell", str(u.Shell))
		set(args, "create_home", boolean(false)) // the home directory and its files are file tasks
		set(args, "state", str("present"))
		g.task("User "+u.Name, "ansible.builtin.user", args)
		switch u.Password {
		case "set":
			g.flag("not reproduced: user %s has a password in the sandbox; its hash is never exported, set it separately", u.Name)
		case "empty":
			g.flag("not reproduced: user %s has an empty password in the sandbox", u.Name)
		}
	}
	for _, n := range userDel {
		g.task("Remove user "+n, "ansible.builtin.user", mapping("name", n, "state", "absent"))
	}
	for _, n := range groupDel {
		g.task("Remove group "+n, "ansible.builtin.group", mapping("name", n, "state", "absent"))
	}
}

func (g *gen) groupName(gid int) string {
	for _, gr := range g.c.AfterGroups {
		if gr.GID == gid {
			return gr.Name
		}
	}
	return ""
}

func (g *gen) owner(uid int) string {
	for _, u := range g.c.AfterUsers {
		if u.UID == uid {
			return u.Name
		}
	}
	return strconv.Itoa(uid)
}

func (g *gen) group(gid int) string {
	if n := g.groupName(gid); n != "" {
		return n
	}
	return strconv.Itoa(gid)
}

var specialTimes = map[string]string{"@reboot": "reboot", "@yearly": "yearly", "@annually": "annually",
	"@monthly": "monthly", "@weekly": "weekly", "@daily": "daily", "@midnight": "daily", "@hourly": "hourly"}

func (g *gen) cron() {
	for _, cc := range g.c.Cron {
		if !cc.UserCrontab {
			continue // /etc/crontab and /etc/cron.d files are copied whole
		}
		e := cc.Entry
		if cc.Action == changes.Removed {
			g.flag("not reproduced: removal of crontab line %q of user %s (the cron module only removes lines it manages)", e.Line, e.User)
			continue
		}
		if e.Env {
			g.task("Cron variable "+e.Name+" for "+e.User, "ansible.builtin.cron",
				mapping("name", e.Name, "env", true, "job", e.Command, "user", e.User))
			continue
		}
		sum := sha256.Sum256([]byte(e.User + "\x00" + e.Schedule + "\x00" + e.Command))
		args := mapping("name", "airlock-"+hex.EncodeToString(sum[:6]), "user", e.User, "job", e.Command)
		if st, ok := specialTimes[e.Schedule]; ok {
			set(args, "special_time", str(st))
		} else if f := strings.Fields(e.Schedule); len(f) == 5 {
			for i, k := range []string{"minute", "hour", "day", "month", "weekday"} {
				set(args, k, str(f[i]))
			}
		} else {
			g.flag("not reproduced: crontab line %q of user %s has an unknown schedule", e.Line, e.User)
			continue
		}
		g.task("Cron job for "+e.User+": "+e.Schedule+" "+truncate(e.Command, 60), "ansible.builtin.cron", args)
	}
}

func (g *gen) sysctlFlags() {
	for _, s := range g.c.Sysctl {
		switch {
		case s.RuntimeOnly:
			g.flag("not reproduced: sysctl %s was changed to %q at runtime only (no file sets it)", s.Key, s.RuntimeAfter)
		case s.Action == changes.Removed:
			g.flag("sysctl %s is no longer configured; its running value stays %q until reboot", s.Key, s.RuntimeAfter)
		}
	}
}

var runtimeOnly = []struct{ prefix, what string }{
	{"sysctl -w", "kernel parameter set at runtime"}, {"iptables", "firewall rule"}, {"ip6tables", "firewall rule"},
	{"nft ", "firewall rule"}, {"ip addr", "address"}, {"ip route", "route"}, {"ip link", "link"},
	{"modprobe", "kernel module"}, {"rmmod", "kernel module"}, {"mount ", "mount"}, {"umount ", "mount"},
	{"swapon", "swap"}, {"hostname ", "hostname"}, {"kill ", "process signal"}, {"pkill", "process signal"},
	{"docker run", "container"}, {"podman run", "container"},
}

func (g *gen) commandLog(cmds []CommandRecord) {
	seen := map[string]bool{}
	for _, c := range cmds {
		if c.ExitCode != 0 {
			continue
		}
		for _, line := range strings.Split(c.Command, "\n") {
			for _, part := range strings.FieldsFunc(line, func(r rune) bool { return r == ';' || r == '&' || r == '|' }) {
				part = strings.TrimPrefix(strings.TrimSpace(part), "sudo ")
				for _, r := range runtimeOnly {
					if strings.HasPrefix(part, r.prefix) && !seen[part] {
						seen[part] = true
						g.flag("runtime-only (%s): the agent ran %q; the manifest does not capture it and the playbook does not reproduce it", r.what, truncate(part, 120))
					}
				}
				if strings.Contains(part, "> /proc/sys/") || strings.Contains(part, ">/proc/sys/") || strings.Contains(part, "> /sys/") {
					if !seen[part] {
						seen[part] = true
						g.flag("runtime-only (kernel setting): the agent ran %q; not reproduced", truncate(part, 120))
					}
				}
			}
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (g *gen) bundle() (*Bundle, error) {
	var handlers []*yaml.Node
	names := make([]string, 0, len(g.handlers))
	for n := range g.handlers {
		if n != handlerDaemonReload && n != handlerSysctl {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if h := g.handlers[handlerDaemonReload]; h != nil {
		handlers = append(handlers, h)
	}
	for _, n := range names {
		handlers = append(handlers, g.handlers[n])
	}
	if h := g.handlers[handlerSysctl]; h != nil {
		handlers = append(handlers, h)
	}
	play := mapping("name", "Apply the change captured by Airlock", "hosts", "all", "become", true,
		"gather_facts", false, "tasks", seq(g.tasks...))
	if len(handlers) > 0 {
		set(play, "handlers", seq(handlers...))
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{seq(play)}}
	head := []string{"# Generated by Airlock from the classified diff of a sandbox.",
		"# Every task comes from the diff; the agent's commands are never replayed."}
	if len(g.flags) > 0 {
		head = append(head, "# Review flags:")
		for _, f := range g.flags {
			for i, l := range wrap(strings.ReplaceAll(f, "\n", " "), 100) {
				prefix := "#   - "
				if i > 0 {
					prefix = "#     "
				}
				head = append(head, prefix+l)
			}
		}
	}
	doc.HeadComment = strings.Join(head, "\n")
	var buf bytes.Buffer
	buf.WriteString("---\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode playbook: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode playbook: %w", err)
	}
	g.files[PlaybookFile] = buf.Bytes()
	b := &Bundle{Files: g.files, Flags: g.flags, Tasks: len(g.tasks)}
	b.PlanHash = b.hash()
	return b, nil
}
