package playbook

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/airlock-dev/airlock/activities/changes"
)

// builder assembles a hand-made changes.Changes and the file contents the
// caller would have fetched for it.
type builder struct {
	c        *changes.Changes
	contents map[string][]byte
}

func newBuilder() *builder {
	return &builder{
		c: &changes.Changes{
			AfterUsers: map[string]changes.User{
				"root":     {Name: "root", UID: 0, GID: 0, Home: "/root", Shell: "/bin/bash"},
				"www-data": {Name: "www-data", UID: 33, GID: 33, Home: "/var/www", Shell: "/usr/sbin/nologin"},
			},
			AfterGroups: map[string]changes.Group{"root": {Name: "root", GID: 0}, "www-data": {Name: "www-data", GID: 33},
				"adm": {Name: "adm", GID: 4}, "crontab": {Name: "crontab", GID: 101}},
			AfterUnits: map[string]changes.Unit{},
		},
		contents: map[string][]byte{},
	}
}

func hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (b *builder) file(action changes.Action, p string, content string, mode uint32, uid, gid int) *builder {
	e := &changes.FileEntry{Type: changes.TypeFile, Mode: mode, UID: uid, GID: gid, Size: int64(len(content)),
		SHA256: hash([]byte(content)), Hash: changes.HashComputed}
	fc := changes.FileChange{Path: changes.Path(p), Action: action, After: e}
	if action == changes.Modified {
		old := *e
		old.SHA256 = hash([]byte("old " + content))
		fc.Before, fc.Content = &old, true
	}
	b.c.Files = append(b.c.Files, fc)
	b.contents[p] = []byte(content)
	return b
}

func (b *builder) dir(p string, mode uint32, uid, gid int) *builder {
	b.c.Files = append(b.c.Files, changes.FileChange{Path: changes.Path(p), Action: changes.Added,
		After: &changes.FileEntry{Type: changes.TypeDir, Mode: mode, UID: uid, GID: gid}})
	return b
}

func (b *builder) link(p, target string) *builder {
	b.c.Files = append(b.c.Files, changes.FileChange{Path: changes.Path(p), Action: changes.Added,
		After: &changes.FileEntry{Type: changes.TypeSymlink, Mode: 0o777, Target: changes.Path(target)}})
	return b
}

func (b *builder) removed(p string, t changes.FileType) *builder {
	b.c.Files = append(b.c.Files, changes.FileChange{Path: changes.Path(p), Action: changes.Removed,
		Before: &changes.FileEntry{Type: t, Mode: 0o644}})
	return b
}

func (b *builder) unit(name, fileState, active string) *builder {
	b.c.AfterUnits[name] = changes.Unit{Name: name, FileState: fileState, Load: "loaded", Active: active}
	return b
}

func (b *builder) service(name, enablement, activity string) *builder {
	after := b.c.AfterUnits[name]
	b.c.Services = append(b.c.Services, changes.ServiceChange{Unit: name, After: &after, Enablement: enablement, Activity: activity})
	return b
}

// The six scenarios of issue 4, as the diff would classify them.

func scenarioNginx() *builder {
	b := newBuilder()
	b.c.Packages = []changes.PackageChange{
		{Name: "nginx", Action: changes.Installed, To: "1.22.1-9", Files: 3},
		{Name: "nginx-common", Action: changes.Installed, To: "1.22.1-9", Auto: true, Files: 120},
	}
	b.c.Folded = []changes.FoldedFiles{{Into: "package nginx-common", Paths: []changes.Path{"/etc/nginx/nginx.conf"}}}
	b.dir("/var/www/app", 0o755, 33, 33)
	b.file(changes.Added, "/etc/nginx/conf.d/ratelimit.conf", "limit_req_zone $binary_remote_addr zone=app:10m rate=10r/s;\n", 0o644, 0, 0)
	b.file(changes.Added, "/etc/nginx/sites-available/app", "server {\n  listen 8080;\n  location / { limit_req zone=app burst=20; root /var/www/app; }\n}\n", 0o644, 0, 0)
	b.link("/etc/nginx/sites-enabled/app", "/etc/nginx/sites-available/app")
	b.removed("/etc/nginx/sites-enabled/default", changes.TypeSymlink)
	b.file(changes.Added, "/etc/logrotate.d/app", "/var/log/nginx/app*.log {\n  daily\n  rotate 14\n  compress\n}\n", 0o644, 0, 0)
	b.file(changes.Added, "/var/www/app/index.html", "<h1>{{ hello }}</h1>\n", 0o644, 33, 33)
	b.unit("nginx.service", "enabled", "active").service("nginx.service", "added", "started")
	return b
}

func scenarioUser() *builder {
	b := newBuilder()
	b.c.AfterUsers["deploy"] = changes.User{Name: "deploy", UID: 1001, GID: 1001, Gecos: "Deploy bot", Home: "/home/deploy", Shell: "/bin/bash", Password: "locked"}
	b.c.AfterGroups["deploy"] = changes.Group{Name: "deploy", GID: 1001}
	b.c.Groups = []changes.GroupChange{{Name: "deploy", Action: changes.Added, After: &changes.Group{Name: "deploy", GID: 1001}}}
	u := b.c.AfterUsers["deploy"]
	b.c.Users = []changes.UserChange{{Name: "deploy", Action: changes.Added, After: &u, GroupsAfter: []string{"adm"}}}
	b.c.Folded = []changes.FoldedFiles{{Into: "users", Paths: []changes.Path{"/etc/group", "/etc/passwd", "/etc/shadow"}}}
	b.dir("/home/deploy", 0o750, 1001, 1001)
	b.dir("/home/deploy/.ssh", 0o700, 1001, 1001)
	b.file(changes.Added, "/home/deploy/.ssh/authorized_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE deploy@ci\n", 0o600, 1001, 1001)
	b.file(changes.Added, "/home/deploy/README", "deploy user home\n", 0o644, 1001, 1001)
	b.file(changes.Added, "/etc/sudoers.d/deploy", "deploy ALL=(root) NOPASSWD: /usr/bin/systemctl restart app\n", 0o440, 0, 0)
	return b
}

func scenarioSysctlCron() *builder {
	b := newBuilder()
	b.file(changes.Added, "/etc/sysctl.d/60-airlock.conf", "vm.swappiness = 10\n", 0o644, 0, 0)
	b.file(changes.Added, "/etc/cron.d/cleanup", "*/10 * * * * root /usr/local/bin/cleanup\n", 0o644, 0, 0)
	b.c.Sysctl = []changes.SysctlChange{{Key: "vm.swappiness", Action: changes.Added, File: "/etc/sysctl.d/60-airlock.conf", After: "10", RuntimeBefore: "60", RuntimeAfter: "10"}}
	b.c.Cron = []changes.CronChange{
		{Action: changes.Added, Entry: changes.CronEntry{Source: "/etc/cron.d/cleanup", User: "root", Schedule: "*/10 * * * *", Command: "/usr/local/bin/cleanup"}},
		{Action: changes.Added, UserCrontab: true, Entry: changes.CronEntry{Source: changes.UserCrontabDir + "/root", User: "root", Env: true, Name: "MAILTO", Command: "ops@example.org"}},
		{Action: changes.Added, UserCrontab: true, Entry: changes.CronEntry{Source: changes.UserCrontabDir + "/root", User: "root", Schedule: "15 3 * * 1-5", Command: "/usr/local/bin/report --quiet > /dev/null 2>&1"}},
		{Action: changes.Added, UserCrontab: true, Entry: changes.CronEntry{Source: changes.UserCrontabDir + "/root", User: "root", Schedule: "@reboot", Command: "/usr/local/bin/warmup"}},
	}
	b.c.Folded = []changes.FoldedFiles{{Into: "cron", Paths: []changes.Path{changes.UserCrontabDir + "/root"}}}
	return b
}

func scenarioSSHD() *builder {
	b := newBuilder()
	b.file(changes.Modified, "/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin no\n", 0o644, 0, 0)
	b.unit("ssh.service", "enabled", "active")
	return b
}

func scenarioRemoval() *builder {
	b := newBuilder()
	b.c.Packages = []changes.PackageChange{
		{Name: "telnet", Action: changes.Removed, From: "0.17+2.4-2", Files: 4},
		{Name: "ftp", Action: changes.Purged, From: "20230507-2", Files: 6},
	}
	b.c.Folded = []changes.FoldedFiles{{Into: "package telnet", Paths: []changes.Path{"/usr/bin/telnet.netkit"}}}
	return b
}

func scenarioUnit() *builder {
	b := newBuilder()
	b.file(changes.Added, "/usr/local/bin/healthcheck", "#!/bin/sh\ncurl -fsS http://127.0.0.1:8080/ >/dev/null\n", 0o755, 0, 0)
	b.file(changes.Added, "/etc/systemd/system/healthcheck.service",
		"[Unit]\nDescription=Health check\n[Service]\nExecStart=/usr/local/bin/healthcheck\nRestart=always\n[Install]\nWantedBy=multi-user.target\n", 0o644, 0, 0)
	b.unit("healthcheck.service", "enabled", "active").service("healthcheck.service", "added", "started")
	b.c.Folded = []changes.FoldedFiles{{Into: "services", Paths: []changes.Path{"/etc/systemd/system/multi-user.target.wants/healthcheck.service"}}}
	return b
}

// scenarioUnitsDown: a custom unit deleted, another disabled and stopped,
// a third masked.
func scenarioUnitsDown() *builder {
	b := newBuilder()
	before := changes.Unit{Name: "old.service", FileState: "enabled", Active: "active"}
	b.c.Services = append(b.c.Services, changes.ServiceChange{Unit: "old.service", Before: &before, Enablement: "removed", Activity: "stopped"})
	b.removed("/etc/systemd/system/old.service", changes.TypeFile)
	b.unit("apache2.service", "disabled", "inactive").service("apache2.service", "disabled", "stopped")
	b.unit("bluetooth.service", "masked", "inactive").service("bluetooth.service", "masked", "")
	b.c.Files = append(b.c.Files, changes.FileChange{Path: "/srv/pipe", Action: changes.Added,
		After: &changes.FileEntry{Type: changes.TypeFIFO, Mode: 0o600}})
	return b
}
