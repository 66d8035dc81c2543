package changes

import (
	"path"
	"sort"
	"strings"
)

// DiffOptions tune Diff. Nil lists mean the defaults.
type DiffOptions struct {
	// Ignore: path globs ("**" matches any number of path segments) whose
	// changes are dropped and only counted.
	Ignore []string
	// PackageState: path globs folded as "package-state" when any package
	// was installed, removed or upgraded (dpkg's and apt's own databases).
	PackageState []string
	// IgnoreUnits: unit-name globs whose changes are dropped.
	IgnoreUnits []string
	// AlwaysFoldPackageState folds PackageState paths even when no package
	// changed (Residual: the package section already compares packages, and
	// two machines with the same packages have byte-different databases).
	AlwaysFoldPackageState bool
}

// DefaultIgnore lists what an agent session leaves behind that is not part
// of the change (shell and editor history, caches, Ansible's own temp
// files, compiled Python caches, derived caches).
var DefaultIgnore = []string{
	"/root/.ansible/**", "/root/.cache/**", "/root/.bash_history", "/root/.python_history",
	"/root/.viminfo", "/root/.lesshst", "/root/.wget-hsts", "/root/.selected_editor",
	"/home/*/.ansible/**", "/home/*/.cache/**", "/home/*/.bash_history", "/home/*/.viminfo",
	"/home/*/.lesshst", "/home/*/.sudo_as_admin_successful",
	"/var/lib/sudo/lectured/**", "/var/backups/**", "/var/lib/logrotate/status", "/var/lib/logrotate/status.tmp",
	"/etc/ld.so.cache", "**/__pycache__/**",
}

// DefaultPackageState lists dpkg, apt and debconf state that changes with
// every package operation and is reproduced by the package operation itself.
var DefaultPackageState = []string{
	"/var/lib/dpkg/**", "/var/lib/apt/**", "/var/cache/debconf/**", "/var/lib/ucf/**",
	"/var/lib/systemd/deb-systemd-helper-enabled/**", "/var/lib/systemd/deb-systemd-user-helper-enabled/**",
	"/usr/share/info/dir", "/usr/share/info/dir.old", "/var/cache/apparmor/**",
}

// DefaultIgnoreUnits are runtime-only units (sessions, slices, devices).
var DefaultIgnoreUnits = []string{
	"*.scope", "*.slice", "*.device", "*.swap", "user@*.service", "user-runtime-dir@*.service",
}

// accountFiles are folded into the users section.
var accountFiles = []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow",
	"/etc/subuid", "/etc/subgid", "/etc/passwd-", "/etc/group-", "/etc/shadow-",
	"/etc/gshadow-", "/etc/subuid-", "/etc/subgid-", "/etc/.pwd.lock"}

func (o DiffOptions) withDefaults() DiffOptions {
	if o.Ignore == nil {
		o.Ignore = DefaultIgnore
	}
	if o.PackageState == nil {
		o.PackageState = DefaultPackageState
	}
	if o.IgnoreUnits == nil {
		o.IgnoreUnits = DefaultIgnoreUnits
	}
	return o
}

// Diff classifies what changed from before to after.
func Diff(before, after *Manifest, opts DiffOptions) *Changes {
	opts = opts.withDefaults()
	ignore := newGlobSet(opts.Ignore)
	c := &Changes{AfterUsers: after.Users, AfterGroups: after.Groups, AfterUnits: after.Units}
	for _, n := range before.Notes {
		c.Notes = append(c.Notes, "before: "+n)
	}
	for _, n := range after.Notes {
		c.Notes = append(c.Notes, "after: "+n)
	}
	c.Packages = diffPackages(before, after)
	files := diffFiles(before, after, ignore, &c.Ignored)
	c.Files, c.Folded = fold(files, before, after, c.Packages, opts)
	c.Services = diffUnits(before, after, opts)
	c.Users, c.Groups = diffAccounts(before, after)
	c.Cron = diffCron(before, after)
	c.Sysctl = diffSysctl(before, after)
	for _, f := range c.Files {
		if f.Action != Removed && f.After.Type == TypeFile && (f.After.Hash == HashError || f.After.Hash == HashNone) {
			c.Notes = append(c.Notes, "after: "+f.Path.Display()+": "+f.After.HashErr)
		}
	}
	return c
}

func diffFiles(before, after *Manifest, ignore globSet, ignored *int) []FileChange {
	var out []FileChange
	for p, b := range before.Files {
		if _, ok := after.Files[p]; !ok {
			if ignore.match(p) || b.Type == TypeSocket {
				*ignored++
				continue
			}
			b := b
			out = append(out, FileChange{Path: p, Action: Removed, Before: &b})
		}
	}
	for p, a := range after.Files {
		b, ok := before.Files[p]
		if ignore.match(p) || (a.Type == TypeSocket && (!ok || b.Type == TypeSocket)) {
			if !ok || !sameEntry(b, a) {
				*ignored++
			}
			continue
		}
		if !ok {
			a := a
			out = append(out, FileChange{Path: p, Action: Added, After: &a})
			continue
		}
		fc, changed := compareEntry(p, b, a)
		if !changed {
			if !sameEntry(b, a) {
				*ignored++ // times only
			}
			continue
		}
		out = append(out, fc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func sameEntry(a, b FileEntry) bool {
	return a.Type == b.Type && a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID && a.Size == b.Size &&
		a.Mtime == b.Mtime && a.Target == b.Target && a.SHA256 == b.SHA256
}

// compareEntry returns false when b and a differ at most in times, inode or
// link count (a rewritten file with the same bytes, a directory whose
// entries changed).
func compareEntry(p Path, b, a FileEntry) (FileChange, bool) {
	fc := FileChange{Path: p, Action: Modified}
	fc.Type = b.Type != a.Type
	fc.Mode = b.Mode != a.Mode
	fc.Owner = b.UID != a.UID || b.GID != a.GID
	fc.Target = a.Type == TypeSymlink && b.Target != a.Target
	if !fc.Type && a.Type == TypeFile {
		switch {
		case b.SHA256 != "" && a.SHA256 != "":
			fc.Content = b.SHA256 != a.SHA256
		case b.Size != a.Size || b.Mtime != a.Mtime:
			fc.Content, fc.ContentUnknown = true, true
		}
	}
	if !fc.Type && !fc.Mode && !fc.Owner && !fc.Target && !fc.Content {
		return fc, false
	}
	bb, aa := b, a
	fc.Before, fc.After = &bb, &aa
	return fc, true
}

// fold moves file changes explained by other sections out of the list.
func fold(files []FileChange, before, after *Manifest, pkgs []PackageChange, opts DiffOptions) ([]FileChange, []FoldedFiles) {
	// Package contents: after-lists of installed/upgraded packages for
	// added and modified paths, before-lists of removed/upgraded packages
	// for removed paths.
	owner := map[Path]string{}
	gone := map[Path]string{}
	listMtime := map[string]int64{}
	for _, pc := range pkgs {
		switch pc.Action {
		case Installed, Upgraded, Downgraded:
			for _, p := range after.PackageLists[pc.Name] {
				owner[p] = pc.Name
			}
			listMtime[pc.Name] = after.Files[listPath(pc.Name)].Mtime
		}
		if pc.Action != Installed {
			for _, p := range before.PackageLists[pc.Name] {
				gone[p] = pc.Name
			}
		}
	}
	groups := map[string]*FoldedFiles{}
	add := func(into, reason string, p Path) {
		g := groups[into]
		if g == nil {
			g = &FoldedFiles{Into: into, Reason: reason}
			groups[into] = g
		}
		g.Paths = append(g.Paths, p)
	}
	both := func(s string) bool { return before.Sections[s] && after.Sections[s] }
	pkgState, accounts := newGlobSet(opts.PackageState), newGlobSet(accountFiles)
	var keep []FileChange
	for _, f := range files {
		switch {
		case f.Action != Removed && owner[f.Path] != "" && unmodifiedSinceUnpack(f.After, listMtime[owner[f.Path]]):
			add("package "+owner[f.Path], "shipped by the package (not modified after unpacking)", f.Path)
		case f.Action == Removed && gone[f.Path] != "":
			add("package "+gone[f.Path], "listed by the removed or replaced package", f.Path)
		case (len(pkgs) > 0 || opts.AlwaysFoldPackageState) && pkgState.match(f.Path):
			add("package-state", "dpkg/apt/debconf databases, rewritten by any package operation", f.Path)
		case both("users") && accounts.match(f.Path):
			add("users", "account databases: see the users and groups sections", f.Path)
		case both("cron") && f.Path.Dir() == "/var/spool/cron/crontabs":
			add("cron", "user crontab: see the cron section", f.Path)
		case both("services") && isUnitLink(f):
			add("services", "systemd enablement or mask link: see the services section", f.Path)
		default:
			keep = append(keep, f)
		}
	}
	var out []FoldedFiles
	for _, g := range groups {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Into < out[j].Into })
	for i := range pkgs {
		pkgs[i].Files = len(groups["package "+pkgs[i].Name].pathsOrNil())
	}
	return keep, out
}

func (g *FoldedFiles) pathsOrNil() []Path {
	if g == nil {
		return nil
	}
	return g.Paths
}

// unmodifiedSinceUnpack: dpkg gives unpacked files the mtime recorded in
// the .deb and writes <pkg>.list after unpacking; anything written later
// (an edited conffile, sed -i) has a newer mtime and stays visible.
// Directories and symlinks listed by the package are always folded.
func unmodifiedSinceUnpack(e *FileEntry, listMtime int64) bool {
	if e == nil || e.Type != TypeFile {
		return true
	}
	return listMtime != 0 && e.Mtime <= listMtime
}

func isUnitLink(f FileChange) bool {
	e := f.After
	if e == nil {
		e = f.Before
	}
	if e.Type != TypeSymlink {
		return false
	}
	dir := string(f.Path.Dir())
	for _, base := range []string{"/etc/systemd/system", "/etc/systemd/user"} {
		if dir == base && e.Target == "/dev/null" {
			return true
		}
		if strings.HasPrefix(dir, base+"/") && strings.Count(dir[len(base)+1:], "/") == 0 &&
			(strings.HasSuffix(dir, ".wants") || strings.HasSuffix(dir, ".requires")) {
			return true
		}
	}
	return false
}

// Match reports whether guest path p matches glob pattern pat, where "**"
// matches any number of whole path segments and other segments follow
// path.Match.
func Match(pat string, p Path) bool {
	return matchSegs(splitPath(pat), splitPath(string(p)))
}

func splitPath(s string) []string { return strings.Split(strings.Trim(s, "/"), "/") }

func matchSegs(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(segs); i++ {
				if matchSegs(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], segs[0]); !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// globSet is a list of patterns split once. Diff matches every path of both
// manifests, so a pattern is tried only when its literal first segment
// matches and all its literal segments occur in the path.
type globSet struct {
	pats  [][]string
	first []string   // literal first segment, or "" if it has wildcards
	lits  [][]string // "/"+segment for every literal segment
}

func newGlobSet(pats []string) globSet {
	var g globSet
	for _, p := range pats {
		segs := splitPath(p)
		var lits []string
		for _, s := range segs {
			if !strings.ContainsAny(s, "*?[\\") {
				lits = append(lits, "/"+s)
			}
		}
		first := segs[0]
		if strings.ContainsAny(first, "*?[\\") {
			first = ""
		}
		g.pats = append(g.pats, segs)
		g.first = append(g.first, first)
		g.lits = append(g.lits, lits)
	}
	return g
}

func (g globSet) match(p Path) bool {
	s := string(p)
	var segs []string
next:
	for i, pat := range g.pats {
		if f := g.first[i]; f != "" {
			rest := strings.TrimPrefix(s, "/")
			if !strings.HasPrefix(rest, f) || (len(rest) > len(f) && rest[len(f)] != '/') {
				continue
			}
		}
		for _, l := range g.lits[i] {
			if !strings.Contains(s, l) {
				continue next
			}
		}
		if segs == nil {
			segs = splitPath(s)
		}
		if matchSegs(pat, segs) {
			return true
		}
	}
	return false
}
