package remote_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/remote/remotetest"
)

func TestAuthentication(t *testing.T) {
	ctx := context.Background()

	t.Run("ExpiredCertificateRefused", func(t *testing.T) {
		_, bundle := setup(t)
		d := &remote.Dialer{CAs: bundle.cas}
		remote.SetDialerClock(d, func() time.Time { return time.Now().Add(-time.Hour) })
		_, err := d.Dial(ctx, bundle.target)
		require.ErrorIs(t, err, remote.ErrAuthRefused)
		require.ErrorContains(t, err, "refused user certificate")
	})

	t.Run("CertificateForOtherSandboxRefused", func(t *testing.T) {
		cas := newCAs(t)
		a := remotetest.Start(t, remotetest.Config{CAs: cas, Principal: "sbx-a"})
		b := remotetest.Start(t, remotetest.Config{CAs: cas, Principal: "sbx-b"})
		d := &remote.Dialer{CAs: cas}

		client, err := d.Dial(ctx, remote.Target{Name: "sbx-a", Addr: a.Addr})
		require.NoError(t, err)
		client.Close()

		// B's host is genuine (checked as sbx-b), but a certificate for
		// sbx-a must not log in there.
		hostB := remote.HostCertCheck(cas.HostCA(), "sbx-b")
		_, err = d.Dial(ctx, remote.Target{Name: "sbx-a", Addr: b.Addr, HostKey: &hostB})
		require.ErrorIs(t, err, remote.ErrAuthRefused)
		require.Contains(t, b.Log(), "sbx-a")
	})

	t.Run("UntrustedUserCARefused", func(t *testing.T) {
		_, bundle := setup(t)
		// Same host CA (host check passes), different user CA.
		hostCheck := remote.HostCertCheck(bundle.cas.HostCA(), bundle.target.Name)
		target := bundle.target
		target.HostKey = &hostCheck
		_, err := (&remote.Dialer{CAs: newCAs(t)}).Dial(ctx, target)
		require.ErrorIs(t, err, remote.ErrAuthRefused)
	})
}

func TestHostVerification(t *testing.T) {
	ctx := context.Background()

	t.Run("HostCertFromForeignCARefused", func(t *testing.T) {
		cas := newCAs(t)
		srv := remotetest.Start(t, remotetest.Config{CAs: cas, Principal: "sbx-a", HostCAs: newCAs(t)})
		_, err := (&remote.Dialer{CAs: cas}).Dial(ctx, remote.Target{Name: "sbx-a", Addr: srv.Addr})
		require.ErrorIs(t, err, remote.ErrHostKey)
		require.ErrorContains(t, err, "not by the Airlock host CA")
		require.NotErrorIs(t, err, remote.ErrAuthRefused)
	})

	t.Run("HostCertForOtherPrincipalRefused", func(t *testing.T) {
		cas := newCAs(t)
		srv := remotetest.Start(t, remotetest.Config{CAs: cas, Principal: "sbx-a", HostPrincipals: []string{"sbx-other"}})
		_, err := (&remote.Dialer{CAs: cas}).Dial(ctx, remote.Target{Name: "sbx-a", Addr: srv.Addr})
		require.ErrorIs(t, err, remote.ErrHostKey)
		require.ErrorContains(t, err, `principal "sbx-a" not in the set of valid principals`)
	})

	t.Run("ExtraHostPrincipalsAccepted", func(t *testing.T) {
		cas := newCAs(t)
		srv := remotetest.Start(t, remotetest.Config{CAs: cas, Principal: "sbx-a", HostPrincipals: []string{"sbx-a", "127.0.0.1"}})
		client, err := (&remote.Dialer{CAs: cas}).Dial(ctx, remote.Target{Name: "sbx-a", Addr: srv.Addr})
		require.NoError(t, err)
		client.Close()
	})

	t.Run("PinnedHostKey", func(t *testing.T) {
		_, bundle := setup(t)
		pinned, err := remote.PinnedHostKeyCheck(bundle.server.HostKey)
		require.NoError(t, err)
		target := bundle.target
		target.HostKey = &pinned
		client, err := bundle.dialer.Dial(ctx, target)
		require.NoError(t, err)
		require.Equal(t, "ok\n", run(t, client, "echo ok").Stdout.String())
		client.Close()

		other, err := newCAs(t).HostIdentity("elsewhere", nil)
		require.NoError(t, err)
		wrong, err := remote.PinnedHostKeyCheck(other.PublicKey)
		require.NoError(t, err)
		target.HostKey = &wrong
		_, err = bundle.dialer.Dial(ctx, target)
		require.ErrorIs(t, err, remote.ErrHostKey)
	})

	t.Run("KnownHosts", func(t *testing.T) {
		_, bundle := setup(t)
		key := parseKey(t, bundle.server.HostKey)
		dir := t.TempDir()
		good := filepath.Join(dir, "known_hosts")
		require.NoError(t, os.WriteFile(good, []byte(knownhosts.Line([]string{bundle.server.Addr}, key)+"\n"), 0o600))

		check, err := remote.KnownHostsCheck(good)
		require.NoError(t, err)
		target := bundle.target
		target.HostKey = &check
		client, err := bundle.dialer.Dial(ctx, target)
		require.NoError(t, err)
		client.Close()

		other, err := newCAs(t).HostIdentity("elsewhere", nil)
		require.NoError(t, err)
		bad := filepath.Join(dir, "known_hosts.bad")
		require.NoError(t, os.WriteFile(bad, []byte(knownhosts.Line([]string{bundle.server.Addr}, parseKey(t, other.PublicKey))+"\n"), 0o600))
		check, err = remote.KnownHostsCheck(bad)
		require.NoError(t, err)
		target.HostKey = &check
		_, err = bundle.dialer.Dial(ctx, target)
		require.ErrorIs(t, err, remote.ErrHostKey)
		var keyErr *knownhosts.KeyError
		require.ErrorAs(t, err, &keyErr)
	})

	t.Run("PlainHostKeyRefusedByDefault", func(t *testing.T) {
		_, bundle := setup(t)
		// Offering only plain ed25519 makes sshd show its bare key; the
		// default check wants a certificate and must refuse.
		check := remote.HostCertCheck(bundle.cas.HostCA(), bundle.target.Name)
		check.Algorithms = []string{ssh.KeyAlgoED25519}
		target := bundle.target
		target.HostKey = &check
		_, err := bundle.dialer.Dial(ctx, target)
		require.ErrorIs(t, err, remote.ErrHostKey)
		require.ErrorContains(t, err, "plain host key")
	})
}

// TestNoInsecureHostKeyCallback guards the rule that host keys are never
// blindly accepted: the insecure callback must not appear in the module.
func TestNoInsecureHostKeyCallback(t *testing.T) {
	forbidden := "Insecure" + "IgnoreHostKey"
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "module root not found at %s", root)
	var offenders []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) { // removed while we walked
			return nil
		}
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".data", "bin", "node_modules", "vendor":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if strings.Contains(string(data), forbidden) {
			offenders = append(offenders, p)
		}
		return nil
	})
	require.NoError(t, err)
	require.Empty(t, offenders)
}
