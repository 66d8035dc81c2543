package remote_test

import (
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/remote/remotetest"
)

// TestOpenSSHFilesWorkWithTheOpenSSHClient logs in with the real ssh
// client, as ansible-playbook does, trusting only the host CA.
func TestOpenSSHFilesWorkWithTheOpenSSHClient(t *testing.T) {
	cas, err := remote.LoadOrCreateCAs(t.TempDir())
	require.NoError(t, err)
	addr, name := remotetest.StartSSHD(t, cas, "sbx-openssh")
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)

	ssh := func(files remote.OpenSSHFiles) (string, error) {
		out, err := exec.Command("ssh", "-i", files.Key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+files.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
			"-o", "HostKeyAlias="+name, "-p", port, "root@"+host, "echo", "in").CombinedOutput()
		return string(out), err
	}
	files, err := cas.WriteOpenSSHFiles(t.TempDir(), "sbx-openssh", 2*time.Minute)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(2*time.Minute), files.Expires, 5*time.Second)
	out, err := ssh(files)
	require.NoError(t, err, out)
	require.Contains(t, out, "in")

	other, err := cas.WriteOpenSSHFiles(t.TempDir(), "sbx-someone-else", 2*time.Minute)
	require.NoError(t, err)
	out, err = ssh(other)
	require.Error(t, err, "a certificate for another sandbox must be refused: %s", out)
}
