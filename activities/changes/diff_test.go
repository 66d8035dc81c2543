package changes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func newManifest() *Manifest {
	all := map[string]bool{"files": true, "packages": true, "services": true, "users": true, "cron": true, "sysctl": true}
	return &Manifest{Version: 1, Root: "/", HashLimit: DefaultHashLimit, Sections: all,
		Files: map[Path]FileEntry{}, Packages: map[string]Package{}, PackageLists: map[string][]Path{},
		Units: map[string]Unit{}, Users: map[string]User{}, Groups: map[string]Group{}, Cron: map[Path]string{},
		SysctlFiles: map[Path]string{}, SysctlValues: map[string]string{}}
}

var inode uint64 = 100

func reg(content string, mtime int64) FileEntry {
	inode++
	return FileEntry{Type: TypeFile, Mode: 0o644, Size: int64(len(content)), Mtime: mtime, Ctime: mtime,
		Inode: inode, Nlink: 1, SHA256: sha(content), Hash: HashComputed}
}

func dirEntry(mtime int64) FileEntry {
	inode++
	return FileEntry{Type: TypeDir, Mode: 0o755, Size: 4096, Mtime: mtime, Ctime: mtime, Inode: inode, Nlink: 2}
}

func link(target string) FileEntry {
	inode++
	return FileEntry{Type: TypeSymlink, Mode: 0o777, Size: int64(len(target)), Target: Path(target), Inode: inode, Nlink: 1}
}

func pkg(name, version string) Package {
	return Package{Name: name, Version: version, Status: "ii", Arch: "amd64"}
}

func filePaths(fs []FileChange) []Path {
	var out []Path
	for _, f := range fs {
		out = append(out, f.Path)
	}
	return out
}

func foldedInto(c *Changes, into string) []Path {
	for _, g := range c.Folded {
		if g.Into == into {
			return g.Paths
		}
	}
	return nil
}

func TestDiffPackagesAndFolding(t *testing.T) {
	b, a := newManifest(), newManifest()
	b.Packages["bash"], a.Packages["bash"] = pkg("bash", "5.1-2"), pkg("bash", "5.2.15-2")
	b.Packages["curl"], a.Packages["curl"] = pkg("curl", "7.88.1-10"), pkg("curl", "7.74.0-1")
	b.Packages["telnet"] = pkg("telnet", "0.17-44")
	b.Packages["oldlib"] = Package{Name: "oldlib", Version: "1.0", Status: "rc", Arch: "amd64"}
	b.Packages["vim"] = pkg("vim", "9.0")
	a.Packages["vim"] = Package{Name: "vim", Version: "9.0", Status: "rc", Arch: "amd64"}
	a.Packages["nginx"] = pkg("nginx", "1.22.1-9")
	a.Packages["libnginx"] = Package{Name: "libnginx", Version: "1.22.1-9", Status: "ii", Arch: "amd64", Auto: true}

	b.PackageLists["telnet"] = []Path{"/usr/bin", "/usr/bin/telnet.netkit", "/usr/share/doc/telnet"}
	a.PackageLists["nginx"] = []Path{"/etc/nginx", "/etc/nginx/nginx.conf", "/usr/sbin/nginx", "/usr/share/doc/nginx", "/usr/share/doc/nginx/copyright"}
	a.Files["/var/lib/dpkg/info/nginx.list"] = reg("list", 2000)

	for _, p := range []Path{"/usr/bin", "/usr/sbin", "/usr/share/doc", "/etc", "/var/lib/dpkg", "/var/lib/dpkg/info"} {
		b.Files[p], a.Files[p] = dirEntry(1), dirEntry(5000)
	}
	b.Files["/usr/bin/telnet.netkit"] = reg("telnet", 500)
	b.Files["/usr/share/doc/telnet"] = dirEntry(500)
	b.Files["/var/lib/dpkg/status"], a.Files["/var/lib/dpkg/status"] = reg("old status", 1), reg("new status", 2000)
	a.Files["/etc/nginx"] = dirEntry(2500)
	a.Files["/etc/nginx/nginx.conf"] = reg("edited after install", 3000) // newer than the list: kept
	a.Files["/usr/sbin/nginx"] = reg("ELF", 1000)                        // from the .deb: folded
	a.Files["/usr/share/doc/nginx"] = dirEntry(1000)
	a.Files["/usr/share/doc/nginx/copyright"] = reg("(c)", 1000)
	a.Files["/etc/nginx/app.conf"] = reg("server {}", 3000) // not in the list
	b.Files["/etc/passwd"], a.Files["/etc/passwd"] = reg("root", 1), reg("root\nwww", 2)
	a.Files["/etc/systemd/system/multi-user.target.wants/nginx.service"] = link("/lib/systemd/system/nginx.service")

	c := Diff(b, a, DiffOptions{})
	got := map[string]PackageChange{}
	for _, p := range c.Packages {
		got[p.Name] = p
	}
	require.Equal(t, Installed, got["nginx"].Action)
	require.Equal(t, 4, got["nginx"].Files)
	require.True(t, got["libnginx"].Auto)
	require.Equal(t, Upgraded, got["bash"].Action)
	require.Equal(t, Downgraded, got["curl"].Action)
	require.Equal(t, Purged, got["telnet"].Action)
	require.Equal(t, 2, got["telnet"].Files)
	require.Equal(t, Purged, got["oldlib"].Action)
	require.Equal(t, Removed, got["vim"].Action)
	require.Len(t, c.Packages, 7)

	require.Equal(t, []Path{"/etc/nginx/app.conf", "/etc/nginx/nginx.conf"}, filePaths(c.Files))
	require.Equal(t, []Path{"/etc/nginx", "/usr/sbin/nginx", "/usr/share/doc/nginx", "/usr/share/doc/nginx/copyright"}, foldedInto(c, "package nginx"))
	require.Equal(t, []Path{"/usr/bin/telnet.netkit", "/usr/share/doc/telnet"}, foldedInto(c, "package telnet"))
	require.Equal(t, []Path{"/var/lib/dpkg/info/nginx.list", "/var/lib/dpkg/status"}, foldedInto(c, "package-state"))
	require.Equal(t, []Path{"/etc/passwd"}, foldedInto(c, "users"))
	require.Equal(t, []Path{"/etc/systemd/system/multi-user.target.wants/nginx.service"}, foldedInto(c, "services"))
	s := c.Summary()
	require.Equal(t, 2, s.PackagesInstalled)
	require.Equal(t, 2, s.PackagesUpgraded)
	require.Equal(t, 3, s.PackagesRemoved)
	require.Equal(t, 10, s.FilesFolded)
}

func TestDiffFileKinds(t *testing.T) {
	b, a := newManifest(), newManifest()
	b.Files["/etc/motd"] = reg("hello", 1)
	a.Files["/etc/motd"] = reg("hello, world", 2)
	b.Files["/etc/mode"] = reg("x", 1)
	m := b.Files["/etc/mode"]
	m.Mode, m.Mtime, m.Ctime = 0o600, 5, 5
	a.Files["/etc/mode"] = m
	b.Files["/etc/owner"] = reg("x", 1)
	o := b.Files["/etc/owner"]
	o.UID, o.GID = 1000, 1000
	a.Files["/etc/owner"] = o
	b.Files["/etc/link"], a.Files["/etc/link"] = link("/a"), link("/b")
	b.Files["/etc/kind"], a.Files["/etc/kind"] = reg("file", 1), dirEntry(2)
	b.Files["/etc/touched"] = reg("same", 1)
	tch := b.Files["/etc/touched"]
	tch.Mtime, tch.Ctime, tch.Inode = 99, 99, 9999 // rewritten with the same bytes
	a.Files["/etc/touched"] = tch
	b.Files["/etc"], a.Files["/etc"] = dirEntry(1), dirEntry(50) // mtime only
	big := FileEntry{Type: TypeFile, Mode: 0o644, Size: 1 << 30, Mtime: 1, Hash: HashLarge}
	b.Files["/srv/big"] = big
	big.Mtime = 2
	a.Files["/srv/big"] = big
	a.Files["/root/.bash_history"] = reg("ls", 3)
	a.Files["/srv/app.sock"] = FileEntry{Type: TypeSocket, Mode: 0o755} // made by a running process

	c := Diff(b, a, DiffOptions{})
	byPath := map[Path]FileChange{}
	for _, f := range c.Files {
		byPath[f.Path] = f
	}
	require.Equal(t, []Path{"/etc/kind", "/etc/link", "/etc/mode", "/etc/motd", "/etc/owner", "/srv/big"}, filePaths(c.Files))
	require.True(t, byPath["/etc/motd"].Content)
	require.False(t, byPath["/etc/motd"].Mode)
	require.True(t, byPath["/etc/mode"].Mode)
	require.False(t, byPath["/etc/mode"].Content, "metadata-only change")
	require.True(t, byPath["/etc/owner"].Owner)
	require.True(t, byPath["/etc/link"].Target)
	require.True(t, byPath["/etc/kind"].Type)
	require.True(t, byPath["/srv/big"].Content)
	require.True(t, byPath["/srv/big"].ContentUnknown)
	require.Equal(t, 4, c.Ignored, "touched file, directory mtime, shell history, socket")
}

func TestDiffServices(t *testing.T) {
	b, a := newManifest(), newManifest()
	set := func(m *Manifest, name, fileState, active string) {
		m.Units[name] = Unit{Name: name, FileState: fileState, Load: "loaded", Active: active, Sub: "x"}
	}
	set(b, "nginx.service", "disabled", "inactive")
	set(a, "nginx.service", "enabled", "active")
	set(b, "ssh.service", "enabled", "active")
	set(a, "ssh.service", "masked", "inactive")
	set(a, "app.service", "static", "active") // new unit without [Install], started
	set(b, "apt-daily.service", "static", "inactive")
	set(a, "apt-daily.service", "static", "active") // runs from a timer: not a managed change
	set(b, "backup.timer", "disabled", "inactive")
	set(a, "backup.timer", "enabled", "active")
	set(b, "old.service", "enabled", "active")
	set(a, "session-3.scope", "", "active")
	c := Diff(b, a, DiffOptions{})
	got := map[string]ServiceChange{}
	for _, s := range c.Services {
		got[s.Unit] = s
	}
	require.Len(t, c.Services, 5)
	require.Equal(t, "enabled", got["nginx.service"].Enablement)
	require.Equal(t, "started", got["nginx.service"].Activity)
	require.Equal(t, "masked", got["ssh.service"].Enablement)
	require.Equal(t, "stopped", got["ssh.service"].Activity)
	require.Equal(t, "added", got["app.service"].Enablement)
	require.Equal(t, "started", got["app.service"].Activity)
	require.Equal(t, "enabled", got["backup.timer"].Enablement)
	require.Equal(t, "removed", got["old.service"].Enablement)
	require.Equal(t, "stopped", got["old.service"].Activity)
}

func TestDiffUsersAndGroups(t *testing.T) {
	b, a := newManifest(), newManifest()
	b.Users["root"] = User{Name: "root", Home: "/root", Shell: "/bin/bash", Password: "locked"}
	a.Users["root"] = User{Name: "root", Home: "/root", Shell: "/bin/zsh", Password: "locked"}
	a.Users["deploy"] = User{Name: "deploy", UID: 1001, GID: 1001, Home: "/home/deploy", Shell: "/bin/bash", Password: "locked"}
	b.Users["old"] = User{Name: "old", UID: 1002, GID: 100}
	b.Groups["sudo"] = Group{Name: "sudo", GID: 27}
	a.Groups["sudo"] = Group{Name: "sudo", GID: 27, Members: []string{"deploy"}}
	a.Groups["deploy"] = Group{Name: "deploy", GID: 1001}
	c := Diff(b, a, DiffOptions{})
	require.Len(t, c.Users, 3)
	require.Equal(t, "deploy", c.Users[0].Name)
	require.Equal(t, Added, c.Users[0].Action)
	require.Equal(t, []string{"sudo"}, c.Users[0].GroupsAfter)
	require.Equal(t, Removed, c.Users[1].Action)
	require.Equal(t, []string{"shell"}, c.Users[2].Fields)
	require.Len(t, c.Groups, 2)
	require.Equal(t, Added, c.Groups[0].Action)
	require.Equal(t, []string{"members"}, c.Groups[1].Fields)
}

func TestDiffCronAndSysctl(t *testing.T) {
	b, a := newManifest(), newManifest()
	b.Cron["/etc/crontab"] = "SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
	a.Cron["/etc/crontab"] = "SHELL=/bin/sh\n17 *  * * *   root    cd / && run-parts --report /etc/cron.hourly\n" // spacing only
	a.Cron["/etc/cron.d/backup"] = "MAILTO=\"\"\n*/5 * * * * root /usr/local/bin/backup --all\n"
	b.Cron[UserCrontabDir+"/alice"] = "# DO NOT EDIT\n@daily /bin/old\n"
	a.Cron[UserCrontabDir+"/alice"] = "# DO NOT EDIT\n#Ansible: x\n0 3 * * 1-5 /home/alice/report  --quiet\n"
	b.SysctlFiles["/etc/sysctl.conf"] = "#\n"
	a.SysctlFiles["/etc/sysctl.conf"] = "#\n"
	a.SysctlFiles["/etc/sysctl.d/99-airlock.conf"] = "net.ipv4.ip_forward = 1\nvm.swappiness=10\n"
	b.SysctlValues = map[string]string{"kernel.pid_max": "4194304"}
	a.SysctlValues = map[string]string{"net.ipv4.ip_forward": "1", "vm.swappiness": "10", "kernel.pid_max": "99999"}
	c := Diff(b, a, DiffOptions{})
	require.Len(t, c.Cron, 4)
	require.Equal(t, CronEntry{Source: "/etc/cron.d/backup", User: "", Env: true, Name: "MAILTO", Command: "", Line: `MAILTO=""`}, c.Cron[0].Entry)
	require.Equal(t, "*/5 * * * *", c.Cron[1].Entry.Schedule)
	require.Equal(t, "/usr/local/bin/backup --all", c.Cron[1].Entry.Command)
	require.Equal(t, Added, c.Cron[2].Action)
	require.True(t, c.Cron[2].UserCrontab)
	require.Equal(t, "alice", c.Cron[2].Entry.User)
	require.Equal(t, "0 3 * * 1-5", c.Cron[2].Entry.Schedule)
	require.Equal(t, "/home/alice/report  --quiet", c.Cron[2].Entry.Command)
	require.Equal(t, Removed, c.Cron[3].Action)
	require.Equal(t, "@daily", c.Cron[3].Entry.Schedule)

	require.Len(t, c.Sysctl, 3)
	require.Equal(t, "kernel.pid_max", c.Sysctl[0].Key)
	require.True(t, c.Sysctl[0].RuntimeOnly)
	require.Equal(t, SysctlChange{Key: "net.ipv4.ip_forward", Action: Added, File: "/etc/sysctl.d/99-airlock.conf", After: "1", RuntimeAfter: "1"}, c.Sysctl[1])
	require.Equal(t, "10", c.Sysctl[2].After)
}

func TestResidual(t *testing.T) {
	agent := newManifest()
	agent.Files["/etc/app.conf"] = reg("a=1\n", 100)
	agent.Files["/etc/shadow"] = reg("root:*:19000::::::\ndeploy:!:19999::::::\n", 100)
	agent.Files[UserCrontabDir+"/deploy"] = reg("0 1 * * * /x\n", 100)
	agent.Files["/home/deploy"] = dirEntry(100)
	agent.Cron[UserCrontabDir+"/deploy"] = "0 1 * * * /x\n"
	agent.Users["deploy"] = User{Name: "deploy", UID: 1001, Password: "locked", LastChg: "19999"}
	agent.Units["app.service"] = Unit{Name: "app.service", FileState: "enabled", Active: "active"}

	verify := newManifest()
	verify.Files["/etc/app.conf"] = reg("a=1\n", 555)                                        // copied later: new mtime and inode
	verify.Files["/etc/shadow"] = reg("root:*:19000::::::\ndeploy:!:20001::::::\n", 555)     // created on another day
	verify.Files[UserCrontabDir+"/deploy"] = reg("#Ansible: airlock-1\n0 1 * * * /x\n", 555) // cron module marker
	verify.Files["/home/deploy"] = dirEntry(555)
	verify.Files["/root/.ansible/tmp"] = dirEntry(555)
	agent.Files["/var/lib/apt/extended_states"] = reg("Package: nginx\nAuto-Installed: 0\n", 100)
	verify.Files["/var/lib/apt/extended_states"] = reg("Package: nginx\nAuto-Installed: 1\n", 555)
	verify.Cron[UserCrontabDir+"/deploy"] = "#Ansible: airlock-1\n0 1 * * * /x\n"
	verify.Users["deploy"] = User{Name: "deploy", UID: 1001, Password: "locked", LastChg: "20001"}
	verify.Units["app.service"] = Unit{Name: "app.service", FileState: "enabled", Active: "active"}

	r := Residual(agent, verify, DefaultIgnoreRules())
	require.True(t, r.Empty(), "%+v", r)

	verify.Files["/etc/app.conf"] = reg("a=2\n", 555)
	verify.Units["app.service"] = Unit{Name: "app.service", FileState: "disabled", Active: "active"}
	r = Residual(agent, verify, DefaultIgnoreRules())
	require.False(t, r.Empty())
	require.Equal(t, []Path{"/etc/app.conf"}, filePaths(r.Files))
	require.Len(t, r.Services, 1)
}

func TestJSONRoundTrip(t *testing.T) {
	b, a := newManifest(), newManifest()
	weird := Path("/srv/bad\xff\xfe name\nwith newline")
	a.Files[weird] = reg("x", 1)
	a.Files["/srv/ok"] = reg("y", 1)
	c := Diff(b, a, DiffOptions{})
	raw, err := json.Marshal(c)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"b64:`)
	var back Changes
	require.NoError(t, json.Unmarshal(raw, &back))
	require.Equal(t, []Path{weird, "/srv/ok"}, filePaths(back.Files))

	raw, err = json.Marshal(a)
	require.NoError(t, err)
	var m Manifest
	require.NoError(t, json.Unmarshal(raw, &m))
	require.Equal(t, a.Files[weird], m.Files[weird])

	raw2, err := json.Marshal(c.Summary())
	require.NoError(t, err)
	require.Less(t, len(raw2), 512)
}

func TestContentAndFormat(t *testing.T) {
	b, a := newManifest(), newManifest()
	oldText := "Port 22\nPermitRootLogin yes\nX11Forwarding yes\n"
	newText := "Port 22\nPermitRootLogin no\nX11Forwarding yes\n"
	b.Files["/etc/ssh/sshd_config"], a.Files["/etc/ssh/sshd_config"] = reg(oldText, 1), reg(newText, 2)
	a.Files["/usr/local/bin/tool"] = reg("\x7fELF\x00\x01", 2)
	a.Files["/etc/new.conf"] = reg("hello\n", 2)
	b.Files["/etc/gone"] = reg("bye\n", 1)
	c := Diff(b, a, DiffOptions{})
	require.Equal(t, []string{"/etc/new.conf", "/etc/ssh/sshd_config", "/usr/local/bin/tool"}, ContentRequests(c))
	require.Equal(t, []string{"/etc/ssh/sshd_config"}, BaselineContentRequests(c))

	err := AttachContents(c, map[string][]byte{"/etc/ssh/sshd_config": []byte(oldText)}, map[string][]byte{
		"/etc/ssh/sshd_config": []byte("tampered"), "/etc/new.conf": []byte("hello\n"), "/usr/local/bin/tool": []byte("\x7fELF\x00\x01")})
	require.ErrorContains(t, err, "does not match manifest")

	require.NoError(t, AttachContents(c, map[string][]byte{"/etc/ssh/sshd_config": []byte(oldText)}, map[string][]byte{
		"/etc/ssh/sshd_config": []byte(newText), "/etc/new.conf": []byte("hello\n"), "/usr/local/bin/tool": []byte("\x7fELF\x00\x01")}))
	byPath := map[Path]FileChange{}
	for _, f := range c.Files {
		byPath[f.Path] = f
	}
	require.Equal(t, "--- a/etc/ssh/sshd_config\n+++ b/etc/ssh/sshd_config\n@@ -1,3 +1,3 @@\n Port 22\n-PermitRootLogin yes\n+PermitRootLogin no\n X11Forwarding yes\n",
		byPath["/etc/ssh/sshd_config"].Diff)
	require.True(t, byPath["/usr/local/bin/tool"].Binary)
	require.Equal(t, "--- /dev/null\n+++ b/etc/new.conf\n@@ -0,0 +1 @@\n+hello\n", byPath["/etc/new.conf"].Diff)

	var out bytes.Buffer
	require.NoError(t, Format(&out, c))
	s := out.String()
	require.Contains(t, s, "Files (4)")
	require.Contains(t, s, "  M /etc/ssh/sshd_config  [content]")
	require.Contains(t, s, "      +PermitRootLogin no")
	require.Contains(t, s, "(diff omitted: binary)")
	require.Contains(t, s, "  D /etc/gone")
	require.Contains(t, s, "Summary: packages +0 -0 ~0, files +2 ~1 -1")
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0}, {"1.0", "1.1", -1}, {"1.10", "1.9", 1}, {"1.0~rc1", "1.0", -1},
		{"1:0.1", "2.0", 1}, {"1.2-1", "1.2-1+deb12u1", -1}, {"7.88.1-10", "7.74.0-1", 1},
		{"1.0a", "1.0", 1}, {"1.0+b1", "1.0", 1}, {"2.0-1", "2.0-1", 0},
	} {
		got := CompareVersions(tc.a, tc.b)
		require.Equal(t, tc.want, sgn(got), "%s vs %s", tc.a, tc.b)
		require.Equal(t, -tc.want, sgn(CompareVersions(tc.b, tc.a)))
	}
}

func sgn(i int) int {
	switch {
	case i < 0:
		return -1
	case i > 0:
		return 1
	}
	return 0
}

func TestMatch(t *testing.T) {
	require.True(t, Match("/root/.cache/**", "/root/.cache"))
	require.True(t, Match("/root/.cache/**", "/root/.cache/a/b"))
	require.False(t, Match("/root/.cache/**", "/root/.cachex"))
	require.True(t, Match("**/__pycache__/**", "/usr/lib/python3/x/__pycache__/y.pyc"))
	require.True(t, Match("/home/*/.viminfo", "/home/bob/.viminfo"))
	require.False(t, Match("/home/*/.viminfo", "/home/bob/x/.viminfo"))
}

func BenchmarkDiff(b *testing.B) {
	before, after := newManifest(), newManifest()
	for i := 0; i < 40000; i++ {
		p := Path(fmt.Sprintf("/usr/share/pkg%d/file%d", i%500, i))
		before.Files[p] = reg("x", 1)
		after.Files[p] = before.Files[p]
	}
	after.Files["/etc/new"] = reg("y", 2)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Diff(before, after, DiffOptions{})
	}
}
