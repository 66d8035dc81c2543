package changes

import (
	"fmt"
	"io"
	"strings"
)

// Format writes c for a terminal: one section per kind of change, unified
// diffs indented under their files, folded files as counts.
func Format(w io.Writer, c *Changes) error {
	p := &printer{w: w}
	if len(c.Packages) > 0 {
		p.head("Packages", len(c.Packages))
		for _, pk := range c.Packages {
			files := ""
			if pk.Files > 0 {
				files = fmt.Sprintf("  (%d files folded)", pk.Files)
			}
			auto := ""
			if pk.Auto {
				auto = " [dependency]"
			}
			switch pk.Action {
			case Installed:
				p.line("  + %s %s%s%s", pk.Name, pk.To, auto, files)
			case Removed, Purged:
				p.line("  - %s %s (%s)%s", pk.Name, pk.From, pk.Action, files)
			default:
				p.line("  ~ %s %s -> %s (%s)%s", pk.Name, pk.From, pk.To, pk.Action, files)
			}
		}
	}
	if len(c.Files) > 0 {
		p.head("Files", len(c.Files))
		for _, f := range c.Files {
			p.file(f)
		}
	}
	if len(c.Folded) > 0 {
		p.head("Folded", len(c.Folded))
		for _, g := range c.Folded {
			p.line("  %d under %s: %s", len(g.Paths), g.Into, g.Reason)
		}
	}
	if len(c.Services) > 0 {
		p.head("Services", len(c.Services))
		for _, s := range c.Services {
			what := strings.Trim(s.Enablement+", "+s.Activity, ", ")
			p.line("  * %s: %s", s.Unit, what)
		}
	}
	if len(c.Users)+len(c.Groups) > 0 {
		p.head("Users and groups", len(c.Users)+len(c.Groups))
		for _, u := range c.Users {
			p.line("  %s user %s%s", sign(u.Action), u.Name, detail(u.Fields))
		}
		for _, g := range c.Groups {
			p.line("  %s group %s%s", sign(g.Action), g.Name, detail(g.Fields))
		}
	}
	if len(c.Cron) > 0 {
		p.head("Cron", len(c.Cron))
		for _, e := range c.Cron {
			p.line("  %s %s (%s): %s", sign(e.Action), e.Entry.Source.Display(), e.Entry.User, e.Entry.Line)
		}
	}
	if len(c.Sysctl) > 0 {
		p.head("Sysctl", len(c.Sysctl))
		for _, s := range c.Sysctl {
			switch {
			case s.RuntimeOnly:
				p.line("  ~ %s = %s -> %s (running value only, not in any file)", s.Key, s.RuntimeBefore, s.RuntimeAfter)
			default:
				p.line("  %s %s = %q -> %q in %s (running: %s)", sign(s.Action), s.Key, s.Before, s.After, s.File.Display(), s.RuntimeAfter)
			}
		}
	}
	if len(c.Notes) > 0 {
		p.head("Notes", len(c.Notes))
		for _, n := range c.Notes {
			p.line("  ! %s", n)
		}
	}
	s := c.Summary()
	p.line("Summary: packages +%d -%d ~%d, files +%d ~%d -%d (%d folded, %d ignored), services %d, users %d, groups %d, cron %d, sysctl %d",
		s.PackagesInstalled, s.PackagesRemoved, s.PackagesUpgraded, s.FilesAdded, s.FilesModified, s.FilesRemoved,
		s.FilesFolded, s.Ignored, s.ServicesChanged, s.UsersChanged, s.GroupsChanged, s.CronChanged, s.SysctlChanged)
	return p.err
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format+"\n", args...)
	}
}

func (p *printer) head(title string, n int) { p.line("%s (%d)", title, n) }

func sign(a Action) string {
	switch a {
	case Added, Installed:
		return "+"
	case Removed, Purged:
		return "-"
	}
	return "~"
}

func detail(fields []string) string {
	if len(fields) == 0 {
		return ""
	}
	return " (" + strings.Join(fields, ", ") + ")"
}

func describe(e *FileEntry) string {
	if e == nil {
		return ""
	}
	s := fmt.Sprintf("%s %04o %d:%d", e.Type, e.Mode, e.UID, e.GID)
	switch e.Type {
	case TypeFile:
		s += fmt.Sprintf(" %d B", e.Size)
		if e.Hash == HashLarge {
			s += " (not hashed: large)"
		}
	case TypeSymlink:
		s += " -> " + e.Target.Display()
	}
	return s
}

func (p *printer) file(f FileChange) {
	switch f.Action {
	case Added:
		p.line("  A %s  %s", f.Path.Display(), describe(f.After))
	case Removed:
		p.line("  D %s  %s", f.Path.Display(), describe(f.Before))
	default:
		var what []string
		for _, a := range []struct {
			on   bool
			name string
		}{{f.Type, "type"}, {f.Content, "content"}, {f.Mode, "mode"}, {f.Owner, "owner"}, {f.Target, "target"}} {
			if a.on {
				what = append(what, a.name)
			}
		}
		p.line("  M %s  [%s] %s -> %s", f.Path.Display(), strings.Join(what, ","), describe(f.Before), describe(f.After))
	}
	switch {
	case f.Diff != "":
		for _, l := range strings.Split(strings.TrimSuffix(f.Diff, "\n"), "\n") {
			p.line("      %s", l)
		}
	case f.DiffOmitted != "":
		p.line("      (diff omitted: %s)", f.DiffOmitted)
	}
}
