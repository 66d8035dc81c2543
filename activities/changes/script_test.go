package changes

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fixture is a fake root file system plus the fixture files that stand in
// for systemctl and /proc/sys.
type fixture struct {
	t       *testing.T
	root    string
	procSys string
	fakeBin string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{t: t, root: filepath.Join(base, "root"), procSys: filepath.Join(base, "procsys"),
		fakeBin: filepath.Join(base, "systemctl")}
	f.write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n", 0o644)
	f.write("etc/group", "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\n", 0o644)
	f.write("etc/shadow", "root:*:19000:0:99999:7:::\nalice:$y$j9T$abc$def:19500:0:99999:7:::\n", 0o640)
	f.write("var/lib/dpkg/status", dpkgStatus("nginx", "1.22.1-9", "bash", "5.2.15-2"), 0o644)
	f.write("var/lib/dpkg/info/nginx.list", "/.\n/etc\n/etc/nginx\n/etc/nginx/nginx.conf\n/usr/sbin/nginx\n", 0o644)
	f.write("var/lib/dpkg/info/bash.list", "/.\n/bin\n/bin/bash\n", 0o644)
	f.write("var/lib/apt/extended_states", "Package: bash\nArchitecture: amd64\nAuto-Installed: 1\n\n", 0o644)
	f.write("etc/nginx/nginx.conf", "worker_processes auto;\n", 0o644)
	f.write("etc/nginx/sites-available/default", "server { listen 80; }\n", 0o644)
	f.symlink("../sites-available/default", "etc/nginx/sites-enabled/default")
	f.write("usr/sbin/nginx", "\x7fELF\x00binary", 0o755)
	f.write("etc/cron.d/backup", "SHELL=/bin/sh\n*/5 * * * * root /usr/local/bin/backup\n", 0o644)
	f.write("var/spool/cron/crontabs/alice", "# DO NOT EDIT\n0 3 * * * /home/alice/bin/report\n", 0o600)
	f.write("etc/sysctl.d/99-airlock.conf", "# tuned\nnet.ipv4.ip_forward = 1\n-vm.swappiness=10\n", 0o644)
	f.write("etc/sysctl.conf", "; nothing\n", 0o644)
	// excluded paths must never appear
	f.write("proc/1/status", "x", 0o644)
	f.write("var/log/syslog", "log", 0o644)
	f.write("etc/machine-id", "0123", 0o444)
	f.write("etc/ssh/airlock/host_ed25519_key", "secret", 0o600)
	// /proc/sys stand-in
	writeFile(t, filepath.Join(f.procSys, "net/ipv4/ip_forward"), "1\n", 0o644)
	writeFile(t, filepath.Join(f.procSys, "vm/swappiness"), "60\n", 0o644)
	f.setUnits("nginx.service enabled enabled\nssh.service disabled enabled\napt-daily.service static -\n",
		"nginx.service loaded active running A high performance web server\n● ssh.service loaded inactive dead OpenBSD Secure Shell server\n")
	return f
}

func dpkgStatus(kv ...string) string {
	var b strings.Builder
	for i := 0; i < len(kv); i += 2 {
		b.WriteString("Package: " + kv[i] + "\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nMaintainer: x <x@example.org>\nVersion: " + kv[i+1] + "\nDescription: fixture\n\n")
	}
	return b.String()
}

func writeFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	require.NoError(t, os.Chmod(p, mode))
}

func (f *fixture) path(rel string) string { return filepath.Join(f.root, rel) }

func (f *fixture) write(rel, content string, mode os.FileMode) {
	writeFile(f.t, f.path(rel), content, mode)
}

func (f *fixture) symlink(target, rel string) {
	require.NoError(f.t, os.MkdirAll(filepath.Dir(f.path(rel)), 0o755))
	require.NoError(f.t, os.Symlink(target, f.path(rel)))
}

func (f *fixture) setUnits(unitFiles, units string) {
	writeFile(f.t, f.fakeBin+".files", unitFiles, 0o644)
	writeFile(f.t, f.fakeBin+".units", units, 0o644)
	script := "#!/bin/bash\ncase $1 in list-unit-files) cat " + f.fakeBin + ".files;; list-units) cat " + f.fakeBin + ".units;; *) exit 1;; esac\n"
	writeFile(f.t, f.fakeBin, script, 0o755)
}

func (f *fixture) opts() ScriptOptions {
	return ScriptOptions{Root: f.root, Systemctl: []string{f.fakeBin}, ProcSys: f.procSys}
}

// run executes the manifest script with bash on this host, optionally
// through a wrapper (setpriv), and parses its output.
func runScript(t *testing.T, opts ScriptOptions, wrapper ...string) *Manifest {
	t.Helper()
	args := append(append([]string(nil), wrapper...), "bash", "-s")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(ManifestScript(opts))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())
	m, err := ParseManifest(&stdout)
	require.NoError(t, err)
	return m
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestManifestBadNames(t *testing.T) {
	f := newFixture(t)
	names := []string{"with space", "new\nline", "bad\xff\xfe", "tab\tname", "-dash", "back\\slash"}
	for _, n := range names {
		f.write("odd/"+n, "content of "+n, 0o644)
	}
	f.symlink("loop-b", "odd/loop-a")
	f.symlink("loop-a", "odd/loop-b")
	f.symlink("..", "odd/up")             // directory loop: must not be followed
	f.symlink("/nonexistent", "odd/dang") // dangling
	require.NoError(t, syscall.Mkfifo(f.path("odd/fifo"), 0o644))
	ln, err := net.Listen("unix", f.path("odd/sock"))
	require.NoError(t, err)
	defer ln.Close()
	require.NoError(t, os.WriteFile(f.path("odd/sparse"), nil, 0o644))
	require.NoError(t, os.Truncate(f.path("odd/sparse"), 1<<30))
	old := time.Unix(1_000_000_000, 0)
	require.NoError(t, os.Chtimes(f.path("odd/sparse"), old, time.Now()))

	m := runScript(t, f.opts())

	for _, n := range names {
		e, ok := m.Files[Path("/odd/"+n)]
		require.True(t, ok, "missing %q", n)
		require.Equal(t, TypeFile, e.Type)
		require.Equal(t, HashComputed, e.Hash)
		require.Equal(t, sha("content of "+n), e.SHA256, n)
	}
	require.Equal(t, TypeSymlink, m.Files["/odd/loop-a"].Type)
	require.Equal(t, Path("loop-b"), m.Files["/odd/loop-a"].Target)
	require.Equal(t, Path(".."), m.Files["/odd/up"].Target)
	require.Equal(t, Path("/nonexistent"), m.Files["/odd/dang"].Target)
	require.Equal(t, TypeFIFO, m.Files["/odd/fifo"].Type)
	require.Equal(t, TypeSocket, m.Files["/odd/sock"].Type)
	require.Empty(t, m.Files["/odd/fifo"].Hash)
	require.Empty(t, m.Files["/odd/sock"].Hash)

	sp := m.Files["/odd/sparse"]
	require.Equal(t, int64(1<<30), sp.Size)
	require.Equal(t, HashLarge, sp.Hash)
	require.Empty(t, sp.SHA256)
	require.Equal(t, 1, m.Stats.Large)
	// The file system is mounted relatime, so a read would have moved the
	// old atime forward. Checked only if a control read does move it.
	require.NoError(t, os.WriteFile(f.path("control"), []byte("x"), 0o644))
	require.NoError(t, os.Chtimes(f.path("control"), old, time.Now()))
	_, err = os.ReadFile(f.path("control"))
	require.NoError(t, err)
	if atime(t, f.path("control")) != old.Unix() {
		require.Equal(t, old.Unix(), atime(t, f.path("odd/sparse")), "sparse file was read")
	} else {
		t.Log("file system does not update atime; skipping the not-read check by atime")
	}

	// excluded paths
	for p := range m.Files {
		for _, x := range []string{"/proc", "/var/log", "/etc/machine-id", "/etc/ssh/airlock"} {
			require.False(t, p.Under(Path(x)), "excluded path %s present", p.Display())
		}
	}
	require.Equal(t, TypeDir, m.Files["/"].Type)
	require.Empty(t, m.Notes)
}

func atime(t *testing.T, p string) int64 {
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(p, &st))
	return st.Atim.Sec
}

func TestManifestSections(t *testing.T) {
	f := newFixture(t)
	m := runScript(t, f.opts())

	require.Equal(t, Package{Name: "nginx", Version: "1.22.1-9", Status: "ii", Arch: "amd64"}, m.Packages["nginx"])
	require.True(t, m.Packages["bash"].Auto)
	require.Equal(t, []Path{"/etc", "/etc/nginx", "/etc/nginx/nginx.conf", "/usr/sbin/nginx"}, m.PackageLists["nginx"])
	require.Len(t, m.PackageLists, 2, "without baseline every list is emitted")

	require.Equal(t, Unit{Name: "nginx.service", FileState: "enabled", Preset: "enabled", Load: "loaded", Active: "active", Sub: "running"}, m.Units["nginx.service"])
	require.Equal(t, "inactive", m.Units["ssh.service"].Active)
	require.Equal(t, "static", m.Units["apt-daily.service"].FileState)

	require.Equal(t, User{Name: "alice", UID: 1000, GID: 1000, Gecos: "Alice", Home: "/home/alice", Shell: "/bin/bash", Password: "set", LastChg: "19500"}, m.Users["alice"])
	require.Equal(t, "locked", m.Users["root"].Password)
	require.Equal(t, []string{"alice"}, m.Groups["sudo"].Members)
	for _, u := range m.Users {
		require.NotContains(t, u.Password, "$y$", "password hashes never leave the guest")
	}

	require.Contains(t, m.Cron, Path("/etc/cron.d/backup"))
	require.Contains(t, m.Cron[UserCrontabDir+"/alice"], "/home/alice/bin/report")
	require.Contains(t, m.SysctlFiles, Path("/etc/sysctl.d/99-airlock.conf"))
	require.Equal(t, map[string]string{"net.ipv4.ip_forward": "1", "vm.swappiness": "60"}, m.SysctlValues)
	cfg := SysctlConfig(m.SysctlFiles)
	require.Equal(t, "10", cfg["vm.swappiness"].value)

	// every section can be switched off
	o := f.opts()
	o.SkipPackages, o.SkipServices, o.SkipUsers, o.SkipCron, o.SkipSysctl = true, true, true, true, true
	m2 := runScript(t, o)
	require.Nil(t, m2.Packages)
	require.Nil(t, m2.Units)
	require.Nil(t, m2.Users)
	require.Nil(t, m2.Cron)
	require.Nil(t, m2.SysctlFiles)
	require.Equal(t, len(m.Files), len(m2.Files))
}

func TestManifestMissingToolsAreNotes(t *testing.T) {
	f := newFixture(t)
	o := f.opts()
	o.Systemctl = []string{"/nonexistent/systemctl"}
	require.NoError(t, os.Remove(f.path("var/lib/dpkg/status")))
	m := runScript(t, o)
	require.NotEmpty(t, m.Notes)
	joined := strings.Join(m.Notes, "\n")
	require.Contains(t, joined, "list-unit-files")
	require.Contains(t, joined, "dpkg")
	require.NotEmpty(t, m.Files)
}

func TestManifestIncrementalHashing(t *testing.T) {
	f := newFixture(t)
	m1 := runScript(t, f.opts())
	regular := 0
	for _, e := range m1.Files {
		if e.Type == TypeFile {
			regular++
			require.Equal(t, HashComputed, e.Hash)
		}
	}
	require.Equal(t, regular, m1.Stats.Hashed)
	require.Zero(t, m1.Stats.Reused)
	require.False(t, m1.Baseline)

	f.write("var/lib/airlock-agent/baseline.idx", string(m1.BaselineIndex()), 0o600)
	f.write("etc/nginx/nginx.conf", "worker_processes 4;\n", 0o644) // rewrite
	f.write("etc/new.conf", "new\n", 0o644)                         // add
	// an upgrade rewrites the package's file list
	f.write("var/lib/dpkg/info/nginx.list", "/.\n/etc\n/etc/nginx\n/etc/nginx/nginx.conf\n/usr/sbin/nginx\n/usr/share/doc/nginx\n", 0o644)
	// same size and mtime but new ctime: re-hashed, not trusted
	st, err := os.Stat(f.path("etc/cron.d/backup"))
	require.NoError(t, err)
	f.write("etc/cron.d/backup", strings.Replace("SHELL=/bin/sh\n*/5 * * * * root /usr/local/bin/backup\n", "5", "6", 1), 0o644)
	require.NoError(t, os.Chtimes(f.path("etc/cron.d/backup"), st.ModTime(), st.ModTime()))

	o := f.opts()
	o.BaselineIndex = f.path("var/lib/airlock-agent/baseline.idx")
	m2 := runScript(t, o)
	require.True(t, m2.Baseline)
	require.Equal(t, 4, m2.Stats.Hashed, "only changed files are read")
	require.Equal(t, regular-3, m2.Stats.Reused)
	require.Equal(t, HashComputed, m2.Files["/etc/nginx/nginx.conf"].Hash)
	require.Equal(t, sha("worker_processes 4;\n"), m2.Files["/etc/nginx/nginx.conf"].SHA256)
	require.Equal(t, HashComputed, m2.Files["/etc/cron.d/backup"].Hash)
	require.Equal(t, HashReused, m2.Files["/etc/passwd"].Hash)
	require.Equal(t, m1.Files["/etc/passwd"].SHA256, m2.Files["/etc/passwd"].SHA256)
	require.Equal(t, m1.Files["/usr/sbin/nginx"].SHA256, m2.Files["/usr/sbin/nginx"].SHA256)

	// only the rewritten package list is shipped; Inherit restores the rest
	require.Len(t, m2.PackageLists, 1)
	require.Contains(t, m2.PackageLists, "nginx")
	m2.Inherit(m1)
	require.Equal(t, m1.PackageLists["bash"], m2.PackageLists["bash"])
	require.Len(t, m2.PackageLists["nginx"], 5)
}

func TestManifestUnreadableFile(t *testing.T) {
	// As root every file on a local file system is readable, so this test
	// runs the script as nobody (setpriv) over a world-readable tree with
	// one mode-000 file. That exercises the real error path: the file gets
	// HashError with the reader's message and the run continues.
	if os.Geteuid() != 0 {
		skipUnlessCI(t, "needs root to switch to nobody")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		skipUnlessCI(t, "setpriv not installed (util-linux)")
	}
	f := newFixture(t)
	f.write("data/secret", "top secret", 0o000)
	f.write("data/open", "open", 0o644)
	for d := f.root; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	require.NoError(t, os.Chmod(f.path("etc/shadow"), 0o644))
	require.NoError(t, os.Chmod(f.path("var/spool/cron/crontabs/alice"), 0o644))
	m := runScript(t, f.opts(), "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
	e := m.Files["/data/secret"]
	require.Equal(t, HashError, e.Hash)
	require.Contains(t, e.HashErr, "Permission denied")
	require.Equal(t, HashComputed, m.Files["/data/open"].Hash)
	require.Equal(t, 1, m.Stats.Errors)

	c := Diff(m, m, DiffOptions{})
	require.True(t, c.Empty())
}

func TestParseManifestRejectsBadStreams(t *testing.T) {
	_, err := ParseManifest(strings.NewReader("hello\x00world\x00"))
	require.Error(t, err)

	f := newFixture(t)
	cmd := exec.Command("bash", "-s")
	cmd.Stdin = strings.NewReader(ManifestScript(f.opts()))
	out, err := cmd.Output()
	require.NoError(t, err)
	for _, cut := range []int{10, len(out) / 2, len(out) - 3} {
		_, err = ParseManifest(bytes.NewReader(out[:cut]))
		require.ErrorIs(t, err, ErrTruncated, "cut at %d", cut)
	}
	_, err = ParseManifest(bytes.NewReader(out))
	require.NoError(t, err)
}

func TestManifestDeletedTree(t *testing.T) {
	f := newFixture(t)
	m1 := runScript(t, f.opts())
	require.NoError(t, os.RemoveAll(f.path("etc/nginx")))
	f.write("var/lib/airlock-agent/baseline.idx", string(m1.BaselineIndex()), 0o600)
	o := f.opts()
	o.BaselineIndex = f.path("var/lib/airlock-agent/baseline.idx")
	m2 := runScript(t, o)
	m2.Inherit(m1)

	c := Diff(m1, m2, DiffOptions{})
	var removed []Path
	for _, fc := range c.Files {
		require.Equal(t, Removed, fc.Action, fc.Path.Display())
		removed = append(removed, fc.Path)
	}
	require.Equal(t, []Path{"/etc/nginx", "/etc/nginx/nginx.conf", "/etc/nginx/sites-available",
		"/etc/nginx/sites-available/default", "/etc/nginx/sites-enabled", "/etc/nginx/sites-enabled/default"}, removed)
	require.Empty(t, c.Packages)
	require.Empty(t, c.Folded, "nginx is still installed: nothing to fold")
	require.Equal(t, 0, c.Summary().FilesAdded)
	require.Equal(t, 6, c.Summary().FilesRemoved)
}

// skipUnlessCI skips on a developer machine that lacks a prerequisite; with
// CI=true a missing prerequisite fails the run instead.
func skipUnlessCI(t *testing.T, missing string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing prerequisite: %s", missing)
	}
	t.Skipf("missing prerequisite (CI=true makes this a failure): %s", missing)
}
