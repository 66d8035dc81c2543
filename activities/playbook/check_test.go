package playbook

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/airlock-dev/airlock/activities/changes"
)

func needAnsible(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		skipUnlessCI(t, "ansible-playbook not installed (apt-get install ansible-core)")
	}
}

func TestCheckSyntaxError(t *testing.T) {
	needAnsible(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, PlaybookFile),
		[]byte("---\n- hosts: all\n  tasks:\n    - name: Bad\n      ansible.builtin.copy:\n        dest: /x\n      bogus_keyword: 1\n"), 0o644))
	f, err := Check(context.Background(), dir)
	require.NoError(t, err)
	require.False(t, f.SyntaxOK)
	require.Equal(t, "syntax-check", f.Items[0].Tool)
	require.Contains(t, f.Items[0].Message, "bogus_keyword")
	require.Equal(t, 4, f.Items[0].Line)
}

func TestCheckWithoutAnsibleLint(t *testing.T) {
	needAnsible(t)
	playbook, err := exec.LookPath("ansible-playbook")
	require.NoError(t, err)
	bin := t.TempDir()
	require.NoError(t, os.Symlink(playbook, filepath.Join(bin, "ansible-playbook")))
	t.Setenv("PATH", bin)

	b := scenarioSSHD()
	bundle, err := Generate(b.c, b.contents, nil)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, bundle.WriteDir(dir))
	f, err := Check(context.Background(), dir)
	require.NoError(t, err)
	require.True(t, f.SyntaxOK)
	require.False(t, f.LintRan)
	require.Equal(t, []Finding{{Tool: "ansible-lint", Severity: "skipped", Message: "ansible-lint is not installed"}}, f.Items)
}

func TestParseLint(t *testing.T) {
	out := []byte(`WARNING  something
[{"type": "issue", "check_name": "yaml[line-length]", "severity": "major", "description": "Line too long",
  "location": {"path": "playbook.yml", "lines": {"begin": 5}}},
 {"type": "issue", "check_name": "name[casing]", "severity": "minor", "description": "casing",
  "location": {"path": "playbook.yml", "lines": {"begin": {"line": 9, "column": 3}}}}]
`)
	items, err := parseLint(out)
	require.NoError(t, err)
	require.Equal(t, []Finding{
		{Tool: "ansible-lint", Rule: "yaml[line-length]", Severity: "major", Path: "playbook.yml", Line: 5, Message: "Line too long"},
		{Tool: "ansible-lint", Rule: "name[casing]", Severity: "minor", Path: "playbook.yml", Line: 9, Message: "casing"},
	}, items)
	_, err = parseLint([]byte("Traceback (most recent call last)"))
	require.Error(t, err)
}

// TestPipelineFromRealManifests runs the in-guest manifest script on a
// fixture root before and after a change, diffs, fetches the requested
// contents from the fixture, generates the playbook and syntax-checks it.
func TestPipelineFromRealManifests(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode))
	}
	write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n", 0o644)
	write("etc/group", "root:x:0:\nadm:x:4:\n", 0o644)
	write("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640)
	write("etc/ssh/sshd_config", "Port 22\nPermitRootLogin yes\n", 0o644)
	opts := changes.ScriptOptions{Root: root, SkipPackages: true, SkipServices: true, SkipSysctl: true}
	take := func(o changes.ScriptOptions) *changes.Manifest {
		cmd := exec.Command("bash", "-s")
		cmd.Stdin = strings.NewReader(changes.ManifestScript(o))
		out, err := cmd.Output()
		require.NoError(t, err)
		m, err := changes.ParseManifest(bytes.NewReader(out))
		require.NoError(t, err)
		return m
	}
	before := take(opts)

	write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\ndeploy:x:1001:1001:Deploy:/home/deploy:/bin/bash\n", 0o644)
	write("etc/group", "root:x:0:\nadm:x:4:deploy\ndeploy:x:1001:\n", 0o644)
	write("etc/shadow", "root:*:19000:0:99999:7:::\ndeploy:!:19999:0:99999:7:::\n", 0o640)
	write("home/deploy/.ssh/authorized_keys", "ssh-ed25519 AAAA deploy\n", 0o600)
	require.NoError(t, os.Chmod(filepath.Join(root, "home/deploy/.ssh"), 0o700))
	require.NoError(t, os.Chown(filepath.Join(root, "home/deploy/.ssh/authorized_keys"), 1001, 1001))
	write("etc/sudoers.d/deploy", "deploy ALL=(ALL) NOPASSWD:ALL\n", 0o440)
	write("etc/ssh/sshd_config", "Port 22\nPermitRootLogin no\n", 0o644)
	write("root/.bash_history", "vi /etc/ssh/sshd_config\n", 0o600)
	write("var/spool/cron/crontabs/deploy", "# DO NOT EDIT\n*/5 * * * * /home/deploy/tick\n", 0o600)
	write("var/lib/airlock-agent/baseline.idx", string(before.BaselineIndex()), 0o600)
	o := opts
	o.BaselineIndex = filepath.Join(root, "var/lib/airlock-agent/baseline.idx")
	after := take(o)

	c := changes.Diff(before, after, changes.DiffOptions{})
	contents := map[string][]byte{}
	for _, p := range changes.ContentRequests(c) {
		data, err := os.ReadFile(filepath.Join(root, p))
		require.NoError(t, err)
		contents[p] = data
	}
	beforeContents := map[string][]byte{"/etc/ssh/sshd_config": []byte("Port 22\nPermitRootLogin yes\n")}
	require.Equal(t, []string{"/etc/ssh/sshd_config"}, changes.BaselineContentRequests(c))
	require.NoError(t, changes.AttachContents(c, beforeContents, contents))
	var text bytes.Buffer
	require.NoError(t, changes.Format(&text, c))
	t.Log(text.String())
	require.Contains(t, text.String(), "+PermitRootLogin no")

	bundle, err := Generate(c, contents, nil)
	require.NoError(t, err)
	pb := string(bundle.Playbook())
	t.Log(pb)
	require.Contains(t, pb, "ansible.builtin.user:")
	require.Contains(t, pb, "ansible.builtin.group:")
	require.Contains(t, pb, "dest: /etc/sudoers.d/deploy")
	require.Contains(t, pb, "job: /home/deploy/tick")
	require.NotContains(t, pb, `name: "Group adm"`, "membership is applied by the user task")
	require.Contains(t, pb, "- adm")
	require.NotContains(t, pb, "/etc/passwd", "account databases are folded, never copied")
	require.NotContains(t, pb, "/etc/shadow")
	require.NotContains(t, pb, "bash_history")
	require.NotContains(t, pb, "crontabs/deploy")
	if _, err := exec.LookPath("ansible-playbook"); err == nil {
		dir := t.TempDir()
		require.NoError(t, bundle.WriteDir(dir))
		f, err := Check(context.Background(), dir)
		require.NoError(t, err)
		require.True(t, f.SyntaxOK, "%+v", f.Items)
	}
}

// TestModuleOptionsExist checks every module option the scenarios emit
// against the installed modules' documentation (ansible-doc --json), which
// --syntax-check does not do.
func TestModuleOptionsExist(t *testing.T) {
	if _, err := exec.LookPath("ansible-doc"); err != nil {
		skipUnlessCI(t, "ansible-doc not installed (apt-get install ansible-core)")
	}
	used := map[string]map[string]bool{}
	for _, b := range []*builder{scenarioNginx(), scenarioUser(), scenarioSysctlCron(), scenarioSSHD(), scenarioRemoval(), scenarioUnit(), scenarioUnitsDown()} {
		bundle, err := Generate(b.c, b.contents, nil)
		require.NoError(t, err)
		var plays []parsedPlay
		require.NoError(t, yaml.Unmarshal(bundle.Playbook(), &plays))
		for _, task := range append(plays[0].Tasks, plays[0].Handlers...) {
			for k, v := range task {
				if !strings.HasPrefix(k, "ansible.builtin.") {
					continue
				}
				if used[k] == nil {
					used[k] = map[string]bool{}
				}
				if m, ok := v.(map[string]any); ok {
					for opt := range m {
						used[k][opt] = true
					}
				}
			}
		}
	}
	for module, opts := range used {
		out, err := exec.Command("ansible-doc", "--json", module).Output()
		require.NoError(t, err, module)
		var doc map[string]struct {
			Doc struct {
				Options map[string]struct {
					Aliases []string `json:"aliases"`
				} `json:"options"`
			} `json:"doc"`
		}
		require.NoError(t, json.Unmarshal(out, &doc))
		known := map[string]bool{}
		for name, o := range doc[module].Doc.Options {
			known[name] = true
			for _, a := range o.Aliases {
				known[a] = true
			}
		}
		for opt := range opts {
			require.True(t, known[opt], "%s has no option %q", module, opt)
		}
	}
	require.Contains(t, used, "ansible.builtin.apt")
	require.Contains(t, used, "ansible.builtin.cron")
	require.Contains(t, used, "ansible.builtin.stat")
	require.Contains(t, used, "ansible.builtin.command")
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
