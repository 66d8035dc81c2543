package remote_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/remote/remotetest"
)

// testBundle is what a test needs besides the client under test.
type testBundle struct {
	cas    *remote.CAs
	dialer *remote.Dialer
	server *remotetest.Server
	target remote.Target
}

func newCAs(t testing.TB) *remote.CAs {
	t.Helper()
	cas, err := remote.LoadOrCreateCAs(t.TempDir())
	require.NoError(t, err)
	return cas
}

// setup starts an sshd for sandbox "sbx-test" and dials it.
func setup(t testing.TB) (*remote.Client, *testBundle) {
	t.Helper()
	cas := newCAs(t)
	srv := remotetest.Start(t, remotetest.Config{CAs: cas, Principal: "sbx-test"})
	bundle := &testBundle{
		cas:    cas,
		dialer: &remote.Dialer{CAs: cas},
		server: srv,
		target: remote.Target{Name: srv.Principal, Addr: srv.Addr},
	}
	client, err := bundle.dialer.Dial(context.Background(), bundle.target)
	require.NoError(t, err, "sshd log:\n%s", srv.Log())
	t.Cleanup(func() { client.Close() })
	return client, bundle
}

// run executes script with default options and requires no Go error.
func run(t *testing.T, c *remote.Client, script string) remote.ExecResult {
	t.Helper()
	res, err := c.Exec(context.Background(), script, remote.ExecOptions{})
	require.NoError(t, err)
	return res
}
