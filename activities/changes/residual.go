package changes

// IgnoreRules is the small, explicit list of differences that are expected
// between the agent's final state and a fresh clone with the playbook
// applied. Besides these paths, Diff itself never reports:
//   - mtime/ctime/inode differences of entries whose type, mode, owner,
//     symlink target and content are equal (copy rewrites files, and
//     directories get new mtimes whenever an entry is added);
//   - byte differences of account databases and user crontabs, which are
//     compared field by field in the users, groups and cron sections
//     (the cron module adds "#Ansible:" marker comments);
//   - byte differences of dpkg/apt/debconf databases (DefaultPackageState):
//     the packages section compares names, versions and states.
type IgnoreRules struct {
	Paths []string // path globs, as DiffOptions.Ignore
	Units []string // unit-name globs, as DiffOptions.IgnoreUnits
}

// DefaultIgnoreRules: session artefacts (DefaultIgnore, which includes
// /root/.ansible, where Ansible itself leaves files) plus log files, in case
// /var/log is not excluded from the manifests.
func DefaultIgnoreRules() IgnoreRules {
	return IgnoreRules{
		// /etc/hosts carries the clone's own hostname (127.0.1.1 line,
		// written by airlock-activate), so it always differs between the
		// agent's sandbox and the verification clone.
		Paths: append(append([]string(nil), DefaultIgnore...), "/var/log/**", "/etc/hosts"),
		Units: DefaultIgnoreUnits,
	}
}

// Residual compares the agent's final manifest with the manifest of the
// verification clone after the playbook ran. An empty result (Empty) means
// the playbook reproduced the change.
func Residual(agentFinal, verifyFinal *Manifest, ignore IgnoreRules) *Changes {
	paths, units := ignore.Paths, ignore.Units
	if paths == nil {
		paths = []string{}
	}
	if units == nil {
		units = []string{}
	}
	return Diff(agentFinal, verifyFinal, DiffOptions{Ignore: paths, IgnoreUnits: units, AlwaysFoldPackageState: true})
}
