package playbook

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/airlock-dev/airlock/activities/changes"
)

type parsedPlay struct {
	Name        string           `yaml:"name"`
	Hosts       string           `yaml:"hosts"`
	Become      bool             `yaml:"become"`
	GatherFacts bool             `yaml:"gather_facts"`
	Tasks       []map[string]any `yaml:"tasks"`
	Handlers    []map[string]any `yaml:"handlers"`
}

// generate builds the bundle, parses the playbook back, and runs Check
// (syntax-check must pass; lint findings are logged and returned).
func generate(t *testing.T, b *builder, cmdlog ...CommandRecord) (*Bundle, parsedPlay, Findings) {
	t.Helper()
	bundle, err := Generate(b.c, b.contents, cmdlog)
	require.NoError(t, err)
	var plays []parsedPlay
	require.NoError(t, yaml.Unmarshal(bundle.Playbook(), &plays), "%s", bundle.Playbook())
	require.Len(t, plays, 1)
	p := plays[0]
	require.Equal(t, "all", p.Hosts)
	require.True(t, p.Become)
	for _, task := range p.Tasks {
		require.NotContains(t, task, "ansible.builtin.shell", "agent commands are never replayed")
		require.NotContains(t, task, "shell")
	}
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Logf("ansible-playbook not installed: syntax check skipped")
		return bundle, p, Findings{}
	}
	dir := t.TempDir()
	require.NoError(t, bundle.WriteDir(dir))
	f, err := Check(context.Background(), dir)
	require.NoError(t, err)
	require.True(t, f.SyntaxOK, "syntax check failed: %+v\n%s", f.Items, bundle.Playbook())
	for _, it := range f.Items {
		t.Logf("finding: %+v", it)
	}
	again, err := ReadDir(dir)
	require.NoError(t, err)
	require.Equal(t, bundle.PlanHash, again.PlanHash, "checking must not change the bundle")
	return bundle, p, f
}

func modules(p parsedPlay) []string {
	var out []string
	for _, task := range p.Tasks {
		for k := range task {
			if strings.HasPrefix(k, "ansible.builtin.") {
				out = append(out, strings.TrimPrefix(k, "ansible.builtin."))
			}
		}
	}
	return out
}

func args(task map[string]any, module string) map[string]any {
	m, _ := task["ansible.builtin."+module].(map[string]any)
	return m
}

func taskFor(t *testing.T, p parsedPlay, module, key, value string) map[string]any {
	t.Helper()
	for _, task := range p.Tasks {
		if a := args(task, module); a != nil && a[key] == value {
			return task
		}
	}
	t.Fatalf("no %s task with %s=%s", module, key, value)
	return nil
}

func TestScenarioNginxSite(t *testing.T) {
	bundle, p, f := generate(t, scenarioNginx())
	require.Equal(t, []string{"apt", "file", "file", "copy", "copy", "file", "copy", "copy", "meta", "systemd"}, modules(p))
	apt := args(p.Tasks[0], "apt")
	require.Equal(t, []any{"nginx=1.22.1-9"}, apt["name"], "dependencies come with nginx")
	require.Equal(t, "present", apt["state"])
	require.Equal(t, "absent", args(taskFor(t, p, "file", "path", "/etc/nginx/sites-enabled/default"), "file")["state"])
	site := taskFor(t, p, "copy", "dest", "/etc/nginx/sites-available/app")
	require.Equal(t, []any{"Reload nginx.service"}, site["notify"])
	require.Equal(t, "0644", args(site, "copy")["mode"])
	src := args(site, "copy")["src"].(string)
	require.Equal(t, scenarioNginx().contents["/etc/nginx/sites-available/app"], bundle.Files[src])
	require.NotContains(t, taskFor(t, p, "copy", "dest", "/etc/logrotate.d/app"), "notify")
	www := args(taskFor(t, p, "copy", "dest", "/var/www/app/index.html"), "copy")
	require.Equal(t, "www-data", www["owner"])
	ln := args(taskFor(t, p, "file", "path", "/etc/nginx/sites-enabled/app"), "file")
	require.Equal(t, "link", ln["state"])
	require.Equal(t, "/etc/nginx/sites-available/app", ln["src"])
	svc := args(p.Tasks[len(p.Tasks)-1], "systemd")
	require.Equal(t, map[string]any{"name": "nginx.service", "enabled": true, "state": "started"}, svc)
	require.Len(t, p.Handlers, 1)
	require.Equal(t, map[string]any{"name": "nginx.service", "state": "reloaded"}, args(p.Handlers[0], "systemd"))
	require.Empty(t, bundle.Flags)
	requireLintClean(t, f)
}

func requireLintClean(t *testing.T, f Findings) {
	t.Helper()
	if !f.LintRan {
		t.Logf("ansible-lint did not run: %+v", f.Items)
		return
	}
	require.True(t, f.LintOK, "ansible-lint findings: %+v", f.Items)
}

func TestScenarioUserWithSudoers(t *testing.T) {
	_, p, f := generate(t, scenarioUser())
	require.Equal(t, []string{"group", "user", "file", "file", "copy", "copy", "copy"}, modules(p))
	require.Equal(t, map[string]any{"name": "deploy", "gid": 1001, "state": "present"}, args(p.Tasks[0], "group"))
	u := args(p.Tasks[1], "user")
	require.Equal(t, 1001, u["uid"])
	require.Equal(t, "deploy", u["group"])
	require.Equal(t, []any{"adm"}, u["groups"])
	require.Equal(t, false, u["create_home"])
	require.Equal(t, "/bin/bash", u["shell"])
	home := args(taskFor(t, p, "file", "path", "/home/deploy"), "file")
	require.Equal(t, map[string]any{"path": "/home/deploy", "state": "directory", "owner": "deploy", "group": "deploy", "mode": "0750"}, home)
	sudo := args(taskFor(t, p, "copy", "dest", "/etc/sudoers.d/deploy"), "copy")
	require.Equal(t, "/usr/sbin/visudo -cf %s", sudo["validate"])
	require.Equal(t, "0440", sudo["mode"])
	key := args(taskFor(t, p, "copy", "dest", "/home/deploy/.ssh/authorized_keys"), "copy")
	require.Equal(t, "0600", key["mode"])
	requireLintClean(t, f)
}

func TestScenarioSysctlAndCron(t *testing.T) {
	bundle, p, f := generate(t, scenarioSysctlCron())
	require.Equal(t, []string{"copy", "copy", "cron", "cron", "cron"}, modules(p))
	sysctl := taskFor(t, p, "copy", "dest", "/etc/sysctl.d/60-airlock.conf")
	require.Equal(t, []any{"Apply sysctl settings"}, sysctl["notify"])
	require.NotContains(t, taskFor(t, p, "copy", "dest", "/etc/cron.d/cleanup"), "notify")
	require.Equal(t, map[string]any{"name": "MAILTO", "env": true, "job": "ops@example.org", "user": "root"}, args(p.Tasks[2], "cron"))
	job := args(p.Tasks[3], "cron")
	require.Equal(t, "15", job["minute"])
	require.Equal(t, "3", job["hour"])
	require.Equal(t, "1-5", job["weekday"])
	require.Equal(t, "/usr/local/bin/report --quiet > /dev/null 2>&1", job["job"])
	require.Regexp(t, `^airlock-[0-9a-f]{12}$`, job["name"])
	require.Equal(t, "reboot", args(p.Tasks[4], "cron")["special_time"])
	require.Len(t, p.Handlers, 1)
	h := p.Handlers[0]
	require.Equal(t, map[string]any{"cmd": "sysctl --system"}, args(h, "command"))
	require.Equal(t, true, h["changed_when"])
	require.Len(t, bundle.Flags, 1)
	require.Contains(t, bundle.Flags[0], "not idempotent by construction")
	require.Contains(t, string(bundle.Playbook()), "# AIRLOCK: command handler")
	requireLintClean(t, f)
}

func TestScenarioSSHDConfigEdit(t *testing.T) {
	_, p, f := generate(t, scenarioSSHD())
	require.Equal(t, []string{"copy"}, modules(p))
	c := p.Tasks[0]
	require.Equal(t, "/usr/sbin/sshd -t -f %s", args(c, "copy")["validate"])
	require.Equal(t, []any{"Reload ssh.service"}, c["notify"])
	require.Equal(t, map[string]any{"name": "ssh.service", "state": "reloaded"}, args(p.Handlers[0], "systemd"))
	requireLintClean(t, f)
}

func TestScenarioPackageRemoval(t *testing.T) {
	_, p, f := generate(t, scenarioRemoval())
	require.Equal(t, []string{"apt", "apt"}, modules(p))
	require.Equal(t, map[string]any{"name": []any{"ftp"}, "state": "absent", "purge": true}, args(p.Tasks[0], "apt"))
	require.Equal(t, map[string]any{"name": []any{"telnet"}, "state": "absent"}, args(p.Tasks[1], "apt"))
	requireLintClean(t, f)
}

func TestScenarioCustomUnit(t *testing.T) {
	_, p, f := generate(t, scenarioUnit())
	require.Equal(t, []string{"copy", "copy", "meta", "systemd"}, modules(p))
	script := args(taskFor(t, p, "copy", "dest", "/usr/local/bin/healthcheck"), "copy")
	require.Equal(t, "0755", script["mode"])
	unit := taskFor(t, p, "copy", "dest", "/etc/systemd/system/healthcheck.service")
	require.Equal(t, []any{"Reload systemd"}, unit["notify"], "started in this change: no restart handler")
	require.Equal(t, "flush_handlers", p.Tasks[2]["ansible.builtin.meta"])
	require.Equal(t, map[string]any{"name": "healthcheck.service", "enabled": true, "state": "started"}, args(p.Tasks[3], "systemd"))
	require.Equal(t, map[string]any{"daemon_reload": true}, args(p.Handlers[0], "systemd"))
	requireLintClean(t, f)
}

func TestPlanHashStable(t *testing.T) {
	b1, err := Generate(scenarioNginx().c, scenarioNginx().contents, nil)
	require.NoError(t, err)
	b2, err := Generate(scenarioNginx().c, scenarioNginx().contents, nil)
	require.NoError(t, err)
	require.Equal(t, b1.PlanHash, b2.PlanHash)
	require.Equal(t, string(b1.Playbook()), string(b2.Playbook()))
	require.Regexp(t, `^sha256:[0-9a-f]{64}$`, b1.PlanHash)
	var t1, t2 bytes.Buffer
	require.NoError(t, b1.WriteTar(&t1))
	require.NoError(t, b2.WriteTar(&t2))
	require.True(t, bytes.Equal(t1.Bytes(), t2.Bytes()), "tar is deterministic")

	// one byte of copied content changes the hash
	sc := scenarioNginx()
	for i := range sc.c.Files {
		if sc.c.Files[i].Path == "/etc/logrotate.d/app" {
			content := "/var/log/nginx/app*.log {\n  daily\n  rotate 7\n  compress\n}\n"
			sc.c.Files[i].After.SHA256 = hash([]byte(content))
			sc.contents["/etc/logrotate.d/app"] = []byte(content)
		}
	}
	b3, err := Generate(sc.c, sc.contents, nil)
	require.NoError(t, err)
	require.NotEqual(t, b1.PlanHash, b3.PlanHash)
	require.Equal(t, b1.Tasks, b3.Tasks)
	require.NotEqual(t, string(b1.Playbook()), string(b3.Playbook()), "the copied file's name is its hash")

	// an edited playbook keeps the files and gets a new hash
	edited := b1.WithPlaybook(append(append([]byte(nil), b1.Playbook()...), "# reviewed\n"...))
	require.NotEqual(t, b1.PlanHash, edited.PlanHash)
	require.Len(t, edited.Files, len(b1.Files))

	dir := t.TempDir()
	require.NoError(t, b1.WriteDir(dir))
	back, err := ReadDir(dir)
	require.NoError(t, err)
	require.Equal(t, b1.PlanHash, back.PlanHash)
}

func TestGenerateRejectsMissingOrWrongContent(t *testing.T) {
	sc := scenarioUnit()
	delete(sc.contents, "/usr/local/bin/healthcheck")
	_, err := Generate(sc.c, sc.contents, nil)
	require.ErrorContains(t, err, "/usr/local/bin/healthcheck")

	sc = scenarioUnit()
	sc.contents["/usr/local/bin/healthcheck"] = []byte("tampered")
	_, err = Generate(sc.c, sc.contents, nil)
	require.ErrorContains(t, err, "does not match")
}

func TestGenerateFlagsAndOddPaths(t *testing.T) {
	b := newBuilder()
	b.file(changes.Added, "/srv/{{ lookup('pipe','id') }}.txt", "x\n", 0o644, 0, 0)
	b.file(changes.Added, "/srv/with space and \"quote\"", "y\n", 0o644, 0, 0)
	b.file(changes.Added, "/srv/bad\xffname", "z\n", 0o644, 0, 0)
	b.c.Files = append(b.c.Files, changes.FileChange{Path: "/srv/huge.img", Action: changes.Added,
		After: &changes.FileEntry{Type: changes.TypeFile, Mode: 0o644, Size: 1 << 30, Hash: changes.HashLarge}})
	b.c.Files = append(b.c.Files, changes.FileChange{Path: "/srv/pipe", Action: changes.Added,
		After: &changes.FileEntry{Type: changes.TypeFIFO, Mode: 0o600}})
	b.c.Users = []changes.UserChange{{Name: "www-data", Action: changes.Changed, Fields: []string{"password"},
		After: &changes.User{Name: "www-data", UID: 33, GID: 33, Home: "/var/www", Shell: "/bin/sh", Password: "set"}}}
	b.c.Sysctl = []changes.SysctlChange{{Key: "net.ipv4.ip_forward", Action: changes.Changed, RuntimeOnly: true, RuntimeAfter: "1"}}
	bundle, p, f := generate(t, b,
		CommandRecord{Command: "iptables -A INPUT -p tcp --dport 8080 -j ACCEPT", ExitCode: 0},
		CommandRecord{Command: "apt-get install -y nginx && sysctl -w net.ipv4.ip_forward=1"},
		CommandRecord{Command: "modprobe nope", ExitCode: 1})
	flags := strings.Join(bundle.Flags, "\n")
	require.Contains(t, flags, `not reproduced: "/srv/bad\xffname" cannot be written in YAML`)
	require.Contains(t, flags, "/srv/huge.img was not hashed (large)")
	require.Contains(t, flags, `not idempotent by construction: "FIFO /srv/pipe"`)
	require.Contains(t, flags, "user www-data has a password")
	require.Contains(t, flags, "sysctl net.ipv4.ip_forward was changed to \"1\" at runtime only")
	require.Contains(t, flags, `runtime-only (firewall rule): the agent ran "iptables -A INPUT`)
	require.Contains(t, flags, `runtime-only (kernel parameter set at runtime): the agent ran "sysctl -w net.ipv4.ip_forward=1"`)
	require.NotContains(t, flags, "modprobe", "failed commands changed nothing")
	require.Contains(t, string(bundle.Playbook()), `dest: !unsafe "/srv/{{ lookup('pipe','id') }}.txt"`)
	fifo := taskFor(t, p, "command", "creates", "/srv/pipe")
	require.Equal(t, []any{"mkfifo", "-m", "0600", "--", "/srv/pipe"}, args(fifo, "command")["argv"])
	require.Contains(t, string(bundle.Playbook()), "# AIRLOCK: command task, not idempotent by construction")
	require.Contains(t, string(bundle.Playbook()), "# Review flags:")
	require.NotContains(t, string(bundle.Playbook()), "name: !unsafe", "task names are made inert instead")
	if f.LintRan { // ansible-lint does not know !unsafe and reports the Jinja in dest
		require.False(t, f.LintOK)
		require.Equal(t, "jinja[spacing]", f.Items[0].Rule)
		require.Positive(t, f.Items[0].Line)
	}
}

func TestRemovedTreeCollapses(t *testing.T) {
	b := newBuilder()
	for _, p := range []string{"/etc/nginx", "/etc/nginx/nginx.conf", "/etc/nginx/sites-enabled", "/etc/nginx/sites-enabled/default", "/etc/other"} {
		typ := changes.TypeFile
		if !strings.Contains(filepath.Base(p), ".") && p != "/etc/nginx/sites-enabled/default" {
			typ = changes.TypeDir
		}
		b.removed(p, typ)
	}
	_, p, _ := generate(t, b)
	require.Len(t, p.Tasks, 2)
	require.Equal(t, "/etc/nginx", args(p.Tasks[0], "file")["path"])
	require.Equal(t, "/etc/other", args(p.Tasks[1], "file")["path"])
}

func TestUnitsStoppedBeforeFiles(t *testing.T) {
	_, p, _ := generate(t, scenarioUnitsDown())
	require.Equal(t, []string{"stat", "systemd", "systemd", "systemd", "file", "command"}, modules(p))
	require.Equal(t, map[string]any{"path": "/etc/systemd/system/old.service"}, args(p.Tasks[0], "stat"))
	require.Equal(t, "airlock_unit_0", p.Tasks[0]["register"])
	require.Equal(t, "airlock_unit_0.stat.exists", p.Tasks[1]["when"], "a second run, with the unit gone, skips it")
	require.Equal(t, map[string]any{"name": "old.service", "state": "stopped", "enabled": false}, args(p.Tasks[1], "systemd"))
	require.Equal(t, map[string]any{"name": "apache2.service", "enabled": false, "state": "stopped"}, args(p.Tasks[2], "systemd"))
	require.Equal(t, "Disable and stop apache2.service", p.Tasks[2]["name"])
	require.Equal(t, map[string]any{"name": "bluetooth.service", "masked": true}, args(p.Tasks[3], "systemd"))
	require.Equal(t, "absent", args(p.Tasks[4], "file")["state"])
}
