package remote_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/airlock-dev/airlock/activities/remote"
)

func TestLoadOrCreateCAs(t *testing.T) {
	t.Run("CreatesKeyFilesWithStrictModes", func(t *testing.T) {
		state := t.TempDir()
		cas, err := remote.LoadOrCreateCAs(state)
		require.NoError(t, err)

		info, err := os.Stat(filepath.Join(state, "ca"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
		for _, name := range []string{"user_ca", "host_ca"} {
			p := filepath.Join(state, "ca", name)
			info, err := os.Stat(p)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			require.True(t, bytes.HasPrefix(data, []byte("-----BEGIN OPENSSH PRIVATE KEY-----")))
			signer, err := ssh.ParsePrivateKey(data)
			require.NoError(t, err)
			require.Equal(t, ssh.KeyAlgoED25519, signer.PublicKey().Type())

			pub, err := os.ReadFile(p + ".pub")
			require.NoError(t, err)
			key, _, _, _, err := ssh.ParseAuthorizedKey(pub)
			require.NoError(t, err)
			require.Equal(t, signer.PublicKey().Marshal(), key.Marshal())
		}
		require.NotEqual(t, cas.UserCAPublicKey(), cas.HostCAPublicKey())
	})

	t.Run("ReloadsSameKeys", func(t *testing.T) {
		state := t.TempDir()
		first, err := remote.LoadOrCreateCAs(state)
		require.NoError(t, err)
		second, err := remote.LoadOrCreateCAs(state)
		require.NoError(t, err)
		require.Equal(t, first.UserCAPublicKey(), second.UserCAPublicKey())
		require.Equal(t, first.HostCAPublicKey(), second.HostCAPublicKey())
	})

	t.Run("RefusesLooseMode", func(t *testing.T) {
		state := t.TempDir()
		_, err := remote.LoadOrCreateCAs(state)
		require.NoError(t, err)
		p := filepath.Join(state, "ca", "host_ca")
		require.NoError(t, os.Chmod(p, 0o640))
		_, err = remote.LoadOrCreateCAs(state)
		require.ErrorContains(t, err, p+" has mode 0640")
		require.ErrorContains(t, err, "chmod 600")
	})
}

func TestUserCert(t *testing.T) {
	cas := newCAs(t)

	t.Run("Fields", func(t *testing.T) {
		before := time.Now()
		signer, err := cas.UserCert("sbx-a", 0)
		require.NoError(t, err)
		cert, ok := signer.PublicKey().(*ssh.Certificate)
		require.True(t, ok)
		require.Equal(t, uint32(ssh.UserCert), cert.CertType)
		require.Equal(t, []string{"sbx-a"}, cert.ValidPrincipals)
		require.Less(t, cert.ValidAfter, uint64(before.Unix()), "backdated for clock skew")
		after := time.Now()
		require.GreaterOrEqual(t, cert.ValidBefore, uint64(before.Add(remote.DefaultUserCertValidity).Unix()))
		require.LessOrEqual(t, cert.ValidBefore, uint64(after.Add(remote.DefaultUserCertValidity).Unix()))
		require.Empty(t, cert.Extensions, "no pty or forwarding")

		checker := ssh.CertChecker{IsUserAuthority: func(auth ssh.PublicKey) bool {
			return bytes.Equal(auth.Marshal(), parseKey(t, cas.UserCAPublicKey()).Marshal())
		}}
		require.NoError(t, checker.CheckCert("sbx-a", cert))
		require.Error(t, checker.CheckCert("sbx-b", cert))
	})

	t.Run("FreshKeyPerCert", func(t *testing.T) {
		a, err := cas.UserCert("sbx-a", 2*time.Minute)
		require.NoError(t, err)
		b, err := cas.UserCert("sbx-a", 2*time.Minute)
		require.NoError(t, err)
		require.NotEqual(t,
			a.PublicKey().(*ssh.Certificate).Key.Marshal(),
			b.PublicKey().(*ssh.Certificate).Key.Marshal())
	})

	t.Run("ValidityRange", func(t *testing.T) {
		for _, v := range []time.Duration{30 * time.Second, 11 * time.Minute, -time.Minute} {
			_, err := cas.UserCert("sbx-a", v)
			require.ErrorIs(t, err, remote.ErrBadValidity, "validity %s", v)
		}
		for _, v := range []time.Duration{time.Minute, 10 * time.Minute} {
			_, err := cas.UserCert("sbx-a", v)
			require.NoError(t, err, "validity %s", v)
		}
		_, err := cas.UserCert("", 0)
		require.Error(t, err)
	})
}

func TestHostIdentity(t *testing.T) {
	cas := newCAs(t)
	id, err := cas.HostIdentity("sbx-a", []string{"10.77.0.100", "sbx-a", ""})
	require.NoError(t, err)
	require.Equal(t, []string{"sbx-a", "10.77.0.100"}, id.Principals)

	signer, err := ssh.ParsePrivateKey(id.PrivateKey)
	require.NoError(t, err)
	require.Equal(t, parseKey(t, id.PublicKey).Marshal(), signer.PublicKey().Marshal())

	cert, ok := parseKey(t, id.Certificate).(*ssh.Certificate)
	require.True(t, ok)
	require.Equal(t, uint32(ssh.HostCert), cert.CertType)
	require.Equal(t, signer.PublicKey().Marshal(), cert.Key.Marshal())
	require.Equal(t, cas.HostCA().Marshal(), cert.SignatureKey.Marshal())

	cb := remote.HostCertCallback(cas.HostCA(), "sbx-a")
	require.NoError(t, cb("10.77.0.100:22", nil, cert))
	require.ErrorIs(t, remote.HostCertCallback(cas.HostCA(), "sbx-b")("10.77.0.100:22", nil, cert), remote.ErrHostKey)
	require.ErrorIs(t, cb("x:22", nil, signer.PublicKey()), remote.ErrHostKey, "plain key refused")

	t.Run("GuestFiles", func(t *testing.T) {
		files := cas.GuestFiles(id, "sbx-a")
		got := map[string]uint32{}
		for _, f := range files {
			got[f.Path] = f.Mode
		}
		require.Equal(t, map[string]uint32{
			"/etc/ssh/airlock/user_ca.pub":               0o644,
			"/etc/ssh/airlock/host_ed25519_key":          0o600,
			"/etc/ssh/airlock/host_ed25519_key.pub":      0o644,
			"/etc/ssh/airlock/host_ed25519_key-cert.pub": 0o644,
			"/etc/ssh/airlock/principals/root":           0o644,
		}, got)
		for _, f := range files {
			switch f.Path {
			case remote.GuestUserCA:
				require.Equal(t, cas.UserCAPublicKey(), f.Content)
			case remote.GuestHostKey:
				require.Equal(t, id.PrivateKey, f.Content)
			case remote.GuestHostCert:
				require.Equal(t, id.Certificate, f.Content)
			case remote.GuestPrincipalsDir + "/root":
				require.Equal(t, "sbx-a\n", string(f.Content))
			}
		}

		files, err := cas.SandboxIdentityFiles("sbx-b")
		require.NoError(t, err)
		require.Len(t, files, 5)
	})
}

func parseKey(t *testing.T, line []byte) ssh.PublicKey {
	t.Helper()
	key, _, _, _, err := ssh.ParseAuthorizedKey(line)
	require.NoError(t, err)
	return key
}
