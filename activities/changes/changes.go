package changes

// Changes is the classified difference between two manifests. It
// serialises to JSON as the full diff artifact; Summary is the bounded part
// that goes into workflow history.
type Changes struct {
	Packages []PackageChange `json:"packages,omitempty"`
	// Files lists actionable file changes, sorted by path. Changes explained
	// by another section (package contents, account databases, crontab
	// spool files, systemd enablement links) are in Folded instead.
	Files    []FileChange    `json:"files,omitempty"`
	Folded   []FoldedFiles   `json:"folded,omitempty"`
	Services []ServiceChange `json:"services,omitempty"`
	Users    []UserChange    `json:"users,omitempty"`
	Groups   []GroupChange   `json:"groups,omitempty"`
	Cron     []CronChange    `json:"cron,omitempty"`
	Sysctl   []SysctlChange  `json:"sysctl,omitempty"`
	// Ignored counts differences dropped on purpose: mtime/ctime-only
	// changes, directory mtimes, and paths matched by the ignore list.
	Ignored int `json:"ignored"`
	// Notes carries problems from either manifest (unreadable files,
	// missing tools) so that a reviewer sees what the diff could not see.
	Notes []string `json:"notes,omitempty"`
	// Units and accounts of the final state, needed to render changes.
	AfterUsers  map[string]User  `json:"after_users,omitempty"`
	AfterGroups map[string]Group `json:"after_groups,omitempty"`
	AfterUnits  map[string]Unit  `json:"after_units,omitempty"`
}

// Action is what happened to an item.
type Action string

const (
	Added      Action = "added"
	Removed    Action = "removed"
	Modified   Action = "modified"
	Installed  Action = "installed"
	Purged     Action = "purged" // removed including configuration
	Upgraded   Action = "upgraded"
	Downgraded Action = "downgraded"
	Changed    Action = "changed"
)

// PackageChange is one dpkg package installed, removed or changed in version.
type PackageChange struct {
	Name   string `json:"name"`
	Arch   string `json:"arch,omitempty"`
	Action Action `json:"action"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	// Auto is apt's Auto-Installed flag after the change (a dependency).
	Auto bool `json:"auto,omitempty"`
	// Files is how many file changes were folded under this package.
	Files int `json:"files,omitempty"`
}

// FileChange is one added, removed or modified path.
type FileChange struct {
	Path   Path       `json:"path"`
	Action Action     `json:"action"`
	Before *FileEntry `json:"before,omitempty"`
	After  *FileEntry `json:"after,omitempty"`
	// For modified entries: which aspects changed.
	Content bool `json:"content,omitempty"` // bytes differ (or cannot be proven equal)
	Mode    bool `json:"mode,omitempty"`
	Owner   bool `json:"owner,omitempty"`
	Type    bool `json:"type,omitempty"`
	Target  bool `json:"target,omitempty"` // symlink target
	// ContentUnknown: at least one side has no hash (too large, unreadable),
	// so Content is inferred from size and mtime.
	ContentUnknown bool `json:"content_unknown,omitempty"`
	// Filled by AttachContents.
	Binary      bool   `json:"binary,omitempty"`
	Diff        string `json:"diff,omitempty"`
	DiffOmitted string `json:"diff_omitted,omitempty"`
}

// FoldedFiles groups file changes explained by another change.
type FoldedFiles struct {
	Into   string `json:"into"` // "package nginx", "users", "cron", "services", "package-state"
	Paths  []Path `json:"paths"`
	Reason string `json:"reason"`
}

// ServiceChange is a systemd unit whose unit file, enablement or active
// state changed.
type ServiceChange struct {
	Unit       string `json:"unit"`
	Before     *Unit  `json:"before,omitempty"`
	After      *Unit  `json:"after,omitempty"`
	Enablement string `json:"enablement,omitempty"` // added, removed, enabled, disabled, masked, unmasked, or "old->new"
	Activity   string `json:"activity,omitempty"`   // started, stopped
}

// UserChange is one account added, removed or changed.
type UserChange struct {
	Name   string   `json:"name"`
	Action Action   `json:"action"`
	Before *User    `json:"before,omitempty"`
	After  *User    `json:"after,omitempty"`
	Fields []string `json:"fields,omitempty"` // changed fields; "groups" for supplementary groups
	// Supplementary groups (from /etc/group) before and after.
	GroupsBefore []string `json:"groups_before,omitempty"`
	GroupsAfter  []string `json:"groups_after,omitempty"`
}

// GroupChange is one group added, removed or changed.
type GroupChange struct {
	Name   string   `json:"name"`
	Action Action   `json:"action"`
	Before *Group   `json:"before,omitempty"`
	After  *Group   `json:"after,omitempty"`
	Fields []string `json:"fields,omitempty"`
}

// CronEntry is one meaningful crontab line.
type CronEntry struct {
	Source   Path   `json:"source"`             // crontab file
	User     string `json:"user"`               // who runs it
	Env      bool   `json:"env,omitempty"`      // NAME=value line
	Schedule string `json:"schedule,omitempty"` // "*/5 * * * *" or "@daily"
	Command  string `json:"command"`            // command, or value for env lines
	Name     string `json:"name,omitempty"`     // env name
	Line     string `json:"line"`
}

// CronChange is one crontab line added or removed.
type CronChange struct {
	Action Action    `json:"action"`
	Entry  CronEntry `json:"entry"`
	// UserCrontab: the source is /var/spool/cron/crontabs/<user> (managed
	// with the cron module); otherwise the file is copied as a whole.
	UserCrontab bool `json:"user_crontab,omitempty"`
}

// SysctlChange is one kernel parameter whose configured or running value changed.
type SysctlChange struct {
	Key           string `json:"key"`
	Action        Action `json:"action"`
	File          Path   `json:"file,omitempty"` // file that sets it after the change
	Before        string `json:"before,omitempty"`
	After         string `json:"after,omitempty"`
	RuntimeBefore string `json:"runtime_before,omitempty"`
	RuntimeAfter  string `json:"runtime_after,omitempty"`
	// RuntimeOnly: the running value changed but no file sets it.
	RuntimeOnly bool `json:"runtime_only,omitempty"`
}

// Summary is the bounded, counts-only view for workflow history.
type Summary struct {
	PackagesInstalled int `json:"packages_installed"`
	PackagesRemoved   int `json:"packages_removed"`
	PackagesUpgraded  int `json:"packages_upgraded"`
	FilesAdded        int `json:"files_added"`
	FilesModified     int `json:"files_modified"`
	FilesRemoved      int `json:"files_removed"`
	FilesFolded       int `json:"files_folded"`
	ServicesChanged   int `json:"services_changed"`
	UsersChanged      int `json:"users_changed"`
	GroupsChanged     int `json:"groups_changed"`
	CronChanged       int `json:"cron_changed"`
	SysctlChanged     int `json:"sysctl_changed"`
	Ignored           int `json:"ignored"`
	Notes             int `json:"notes"`
}

// Summary counts c.
func (c *Changes) Summary() Summary {
	s := Summary{ServicesChanged: len(c.Services), UsersChanged: len(c.Users),
		GroupsChanged: len(c.Groups), CronChanged: len(c.Cron), SysctlChanged: len(c.Sysctl),
		Ignored: c.Ignored, Notes: len(c.Notes)}
	for _, p := range c.Packages {
		switch p.Action {
		case Installed:
			s.PackagesInstalled++
		case Removed, Purged:
			s.PackagesRemoved++
		default:
			s.PackagesUpgraded++
		}
	}
	for _, f := range c.Files {
		switch f.Action {
		case Added:
			s.FilesAdded++
		case Removed:
			s.FilesRemoved++
		default:
			s.FilesModified++
		}
	}
	for _, f := range c.Folded {
		s.FilesFolded += len(f.Paths)
	}
	return s
}

// Empty reports whether nothing actionable changed (used for residual
// diffs). Folded files do not count: each is accounted for by the section it
// is folded into (a package, an account, a cron entry, a unit).
func (c *Changes) Empty() bool {
	return len(c.Packages) == 0 && len(c.Files) == 0 && len(c.Services) == 0 &&
		len(c.Users) == 0 && len(c.Groups) == 0 && len(c.Cron) == 0 && len(c.Sysctl) == 0
}

// Map returns the counts keyed by their JSON names, the form workflow
// results carry.
func (s Summary) Map() map[string]int {
	return map[string]int{
		"packages_installed": s.PackagesInstalled, "packages_removed": s.PackagesRemoved,
		"packages_upgraded": s.PackagesUpgraded, "files_added": s.FilesAdded, "files_modified": s.FilesModified,
		"files_removed": s.FilesRemoved, "files_folded": s.FilesFolded, "services_changed": s.ServicesChanged,
		"users_changed": s.UsersChanged, "groups_changed": s.GroupsChanged, "cron_changed": s.CronChanged,
		"sysctl_changed": s.SysctlChanged, "ignored": s.Ignored, "notes": s.Notes,
	}
}
