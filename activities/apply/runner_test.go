package apply

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func requireAnsible(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ansible-playbook is not installed (apt-get install ansible-core)")
		}
		t.Skip("ansible-playbook is not installed (apt-get install ansible-core)")
	}
}

func TestParseRecap(t *testing.T) {
	out := []byte(`
TASK [x] ***
changed: [prod-web-1]

PLAY RECAP *********************************************************************
prod-web-1                 : ok=5    changed=2    unreachable=0    failed=1    skipped=3    rescued=0    ignored=0
prod-web-2                 : ok=1    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
`)
	r, err := ParseRecap(out)
	require.NoError(t, err)
	require.Len(t, r.Hosts, 2)
	require.Equal(t, HostRecap{Host: "prod-web-1", OK: 5, Changed: 2, Failed: 1, Skipped: 3}, r.Hosts[0])
	tot := r.Totals()
	require.Equal(t, 1, tot.Unreachable)
	require.Equal(t, 2, tot.Changed)

	_, err = ParseRecap([]byte("ERROR! the playbook could not be found"))
	require.Error(t, err)
}

// TestRunLocalCheckThenApply runs real ansible-playbook with a local
// connection: check mode changes nothing, the real run does, and a second
// run reports changed=0.
func TestRunLocalCheckThenApply(t *testing.T) {
	requireAnsible(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "out", "motd")
	pb := "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: write motd\n      ansible.builtin.copy:\n        dest: " + target + "\n        content: \"hello\\n\"\n        mode: \"0644\"\n"
	require.NoError(t, os.MkdirAll(filepath.Dir(target), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "playbook.yml"), []byte(pb), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "inventory.ini"), []byte("localhost ansible_python_interpreter=/usr/bin/python3\n"), 0o644))

	var out bytes.Buffer
	opts := RunOptions{Dir: dir, Inventory: "inventory.ini", Connection: "local", Check: true, Output: &out}
	r, _, err := Run(context.Background(), opts)
	require.NoError(t, err, out.String())
	require.Equal(t, 1, r.Totals().Changed)
	require.NoFileExists(t, target, "check mode must not change anything")

	opts.Check = false
	r, _, err = Run(context.Background(), opts)
	require.NoError(t, err, out.String())
	require.Equal(t, 1, r.Totals().Changed)
	b, err := os.ReadFile(target)
	require.NoError(t, err)
	require.Equal(t, "hello\n", string(b))

	r, _, err = Run(context.Background(), opts)
	require.NoError(t, err)
	require.Equal(t, 0, r.Totals().Changed, "second run must be idempotent")
	require.Contains(t, out.String(), "PLAY RECAP")
}

func TestRunReportsFailedPlay(t *testing.T) {
	requireAnsible(t)
	dir := t.TempDir()
	pb := "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: /bin/false\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "playbook.yml"), []byte(pb), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "inventory.ini"), []byte("localhost ansible_python_interpreter=/usr/bin/python3\n"), 0o644))
	r, _, err := Run(context.Background(), RunOptions{Dir: dir, Inventory: "inventory.ini", Connection: "local"})
	require.NoError(t, err)
	require.Equal(t, 1, r.Totals().Failed)
}
