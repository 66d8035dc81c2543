package sandboxtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// Guest paths of the golden image contract (docs/ARCHITECTURE.md).
const (
	HostKeyPath  = "/etc/ssh/airlock/host_ed25519_key"
	HostPubPath  = "/etc/ssh/airlock/host_ed25519_key.pub"
	HostCertPath = "/etc/ssh/airlock/host_ed25519_key-cert.pub"
	UserCAPath   = "/etc/ssh/airlock/user_ca.pub"
	PrincipalsOf = "/etc/ssh/airlock/principals/root"
)

// Identity returns a complete, fresh identity for sandbox name: machine-id,
// hostname, an ed25519 host key certified by a throw-away host CA, a
// throw-away user CA and the root principal — what sshd in the golden
// image needs to start. Real callers get theirs from activities/remote.
func Identity(t testing.TB, name string) *sandbox.Identity {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Fatalf("test identity: %v", err)
		}
	}
	newKey := func() (ssh.PublicKey, ed25519.PrivateKey) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		must(err)
		sp, err := ssh.NewPublicKey(pub)
		must(err)
		return sp, priv
	}
	hostPub, hostPriv := newKey()
	_, caPriv := newKey()
	caSigner, err := ssh.NewSignerFromKey(caPriv)
	must(err)
	userCAPub, _ := newKey()
	cert := &ssh.Certificate{
		Key: hostPub, CertType: ssh.HostCert, KeyId: "test:" + name,
		ValidPrincipals: []string{name},
		ValidAfter:      uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
	}
	must(cert.SignCert(rand.Reader, caSigner))
	block, err := ssh.MarshalPrivateKey(hostPriv, "root@"+name)
	must(err)
	var mid [16]byte
	rand.Read(mid[:])
	entropy := make([]byte, 64)
	rand.Read(entropy)
	return &sandbox.Identity{
		Hostname:  name,
		MachineID: hex.EncodeToString(mid[:]),
		Entropy:   entropy,
		Files: []sandbox.GuestFile{
			{Path: UserCAPath, Mode: 0o644, Content: ssh.MarshalAuthorizedKey(userCAPub)},
			{Path: HostKeyPath, Mode: 0o600, Content: pem.EncodeToMemory(block)},
			{Path: HostPubPath, Mode: 0o644, Content: ssh.MarshalAuthorizedKey(hostPub)},
			{Path: HostCertPath, Mode: 0o644, Content: ssh.MarshalAuthorizedKey(cert)},
			{Path: PrincipalsOf, Mode: 0o644, Content: []byte(name + "\n")},
		},
	}
}
