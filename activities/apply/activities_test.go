package apply

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/activities/playbook"
	"github.com/airlock-dev/airlock/store"
	"github.com/airlock-dev/airlock/store/storetest"
)

type applyBundle struct {
	acts   *Activities
	st     *store.Store
	target string
}

func setupApply(t *testing.T) *applyBundle {
	t.Helper()
	requireAnsible(t)
	st, err := store.Open(context.Background(), storetest.Start(t))
	require.NoError(t, err)
	t.Cleanup(st.Close)
	dir := t.TempDir()
	inv := filepath.Join(dir, "inventory.ini")
	require.NoError(t, os.WriteFile(inv, []byte("localhost ansible_python_interpreter=/usr/bin/python3\n"), 0o644))
	return &applyBundle{
		acts:   &Activities{Env: "test", Inventory: inv, Artifacts: st, Connection: "local"},
		st:     st,
		target: filepath.Join(dir, "motd"),
	}
}

func (b *applyBundle) storeBundle(t *testing.T, content string) (ref, hash string) {
	t.Helper()
	pb := "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.copy:\n        dest: " + b.target + "\n        content: " + content + "\n        mode: \"0644\"\n"
	bun, err := playbook.FromFiles(map[string][]byte{playbook.PlaybookFile: []byte(pb)})
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, bun.WriteTar(&buf))
	r, err := b.st.PutArtifact(context.Background(), "bundle", &buf)
	require.NoError(t, err)
	return r.ID, bun.PlanHash
}

func TestApplyPlaybookCheckThenReal(t *testing.T) {
	b := setupApply(t)
	ref, hash := b.storeBundle(t, "hello")
	ctx := context.Background()

	res, err := b.acts.ApplyPlaybook(ctx, Input{BundleRef: ref, PlanHash: hash, Check: true})
	require.NoError(t, err)
	require.True(t, res.OK)
	require.Equal(t, 1, res.Changed)
	require.NoFileExists(t, b.target)
	require.NotEmpty(t, res.OutputRef)
	full, err := b.st.ReadArtifact(ctx, res.OutputRef)
	require.NoError(t, err)
	require.Contains(t, string(full), "PLAY RECAP")

	res, err = b.acts.ApplyPlaybook(ctx, Input{BundleRef: ref, PlanHash: hash})
	require.NoError(t, err)
	require.True(t, res.OK)
	got, err := os.ReadFile(b.target)
	require.NoError(t, err)
	require.Equal(t, "hello", string(got))
}

func TestApplyRefusesAPlanThatWasNotApproved(t *testing.T) {
	b := setupApply(t)
	ref, _ := b.storeBundle(t, "evil")
	_, approved := b.storeBundle(t, "hello")
	_, err := b.acts.ApplyPlaybook(context.Background(), Input{BundleRef: ref, PlanHash: approved})
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "got %v", err)
	require.Equal(t, ErrTypePlanMismatch, appErr.Type())
	require.True(t, appErr.NonRetryable())
	require.NoFileExists(t, b.target)
}

// TestApplyNamesWhyAHostWasUnreachable runs real ansible against a host
// whose SSH port is closed: the result is not OK and says why.
func TestApplyNamesWhyAHostWasUnreachable(t *testing.T) {
	b := setupApply(t)
	ref, hash := b.storeBundle(t, "hello")
	inv := filepath.Join(t.TempDir(), "unreachable.ini")
	require.NoError(t, os.WriteFile(inv, []byte("web-9 ansible_host=127.0.0.1 ansible_port=1 ansible_user=root\n"), 0o644))
	acts := &Activities{Env: "test", Inventory: inv, Artifacts: b.st, KnownHosts: filepath.Join(t.TempDir(), "known_hosts")}

	res, err := acts.ApplyPlaybook(context.Background(), Input{BundleRef: ref, PlanHash: hash, Check: true})
	require.NoError(t, err)
	require.False(t, res.OK)
	require.Equal(t, 1, res.Unreachable)
	require.Contains(t, res.Reason, "fatal: [web-9]: UNREACHABLE!")
	require.Contains(t, res.Reason, "port 1")
}

func TestFirstFailureCutsLongLines(t *testing.T) {
	out := []byte("TASK [x]\nok: [a]\nfatal: [b]: FAILED! => {\"msg\": \"" + string(bytes.Repeat([]byte("é"), 300)) + "\"}\nfatal: [c]: UNREACHABLE! => {}\n")
	got := FirstFailure(out, 100)
	require.True(t, strings.HasPrefix(got, "fatal: [b]: FAILED!"), got)
	require.LessOrEqual(t, len(got), 100+len("…"))
	require.True(t, utf8.ValidString(got))
	require.Empty(t, FirstFailure([]byte("PLAY RECAP\nok: [a]\n"), 100))
}
