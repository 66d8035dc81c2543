package hv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/remote/remotetest"
)

// TestEditFile runs EditFile against a real sshd on a loopback port (no
// VM): the "sandbox" is this host, and the files live in a temp dir under
// /tmp, which the default path policy allows.
func TestEditFile(t *testing.T) {
	remotetest.RequireSSHD(t)
	if os.Geteuid() != 0 {
		skipUnlessCI(t, "needs root: the edit runs as root and chowns")
	}
	cas, err := remote.LoadOrCreateCAs(t.TempDir())
	require.NoError(t, err)
	const name = "sbx-edit-test"
	srv := remotetest.Start(t, remotetest.Config{CAs: cas, Principal: name})
	a := &Activities{Pool: remote.NewPool(&remote.Dialer{CAs: cas}, remote.PoolOptions{})}
	t.Cleanup(func() { a.Pool.Close() })
	a.remember(name, srv.Addr)
	ctx := context.Background()
	dir, err := os.MkdirTemp("/tmp", "airlock-edit-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := func(v string) *string { return &v }
	edit := func(e tools.EditFileArgs) (tools.EditFileResult, error) {
		return a.EditFile(ctx, tools.EditFileInput{Sandbox: name, Edit: e})
	}

	conf := filepath.Join(dir, "site.conf")
	require.NoError(t, os.WriteFile(conf, []byte("server {\n    listen 80;\n}\n"), 0o640))
	require.NoError(t, os.Chown(conf, 65534, 65534)) // nobody:nogroup

	res, err := edit(tools.EditFileArgs{Path: conf, Op: "replace", OldText: "listen 80;", NewText: s("listen 8080;")})
	require.NoError(t, err)
	require.False(t, res.Created)
	require.Equal(t, "0640", res.Mode, "the file keeps its mode")
	require.Equal(t, "nobody", res.Owner, "and its owner")
	require.Contains(t, res.Diff, "-    listen 80;\n+    listen 8080;")
	b, err := os.ReadFile(conf)
	require.NoError(t, err)
	require.Equal(t, "server {\n    listen 8080;\n}\n", string(b))
	fi, err := os.Stat(conf)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm())

	_, err = edit(tools.EditFileArgs{Path: conf, Op: "append", Content: s("# tuned\n")})
	require.NoError(t, err)
	b, _ = os.ReadFile(conf)
	require.Equal(t, "server {\n    listen 8080;\n}\n# tuned\n", string(b))

	newFile := filepath.Join(dir, "sub", "new.sh")
	res, err = edit(tools.EditFileArgs{Path: newFile, Op: "write", Content: s("#!/bin/sh\necho hi\n"), Mode: "0755"})
	require.NoError(t, err)
	require.True(t, res.Created)
	fi, err = os.Stat(newFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
	require.Equal(t, "root", res.Owner)

	for _, tc := range []struct {
		e    tools.EditFileArgs
		want string
	}{
		{tools.EditFileArgs{Path: conf, Op: "replace", OldText: "no such text", NewText: s("x")}, "not found"},
		{tools.EditFileArgs{Path: filepath.Join(dir, "missing"), Op: "replace", OldText: "a", NewText: s("b")}, "does not exist"},
		{tools.EditFileArgs{Path: "/etc/shadow", Op: "append", Content: s("x")}, "path policy"},
		{tools.EditFileArgs{Path: "/usr/bin/evil", Op: "write", Content: s("x")}, "not under any allowed prefix"},
	} {
		_, err := edit(tc.e)
		require.Error(t, err, tc.e.Path)
		require.Contains(t, err.Error(), tc.want)
		var ae *temporal.ApplicationError
		require.True(t, errors.As(err, &ae), fmt.Sprintf("%T", err))
		require.True(t, ae.NonRetryable(), "a refused edit is not retried")
	}
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
