package remote

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
)

// OpenSSHFiles are a short-lived user key and certificate plus a
// known_hosts file that trusts only Airlock's host CA, for tools that run
// the OpenSSH client themselves (ansible-playbook during verification).
type OpenSSHFiles struct {
	Key        string // private key; Key+"-cert.pub" is the certificate
	KnownHosts string // "@cert-authority * <host CA>"
	Expires    time.Time
}

// WriteOpenSSHFiles writes a fresh user key and certificate for principal,
// valid for validity, and a known_hosts trusting the host CA, into dir.
func (c *CAs) WriteOpenSSHFiles(dir, principal string, validity time.Duration) (OpenSSHFiles, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return OpenSSHFiles{}, fmt.Errorf("openssh files: %w", err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return OpenSSHFiles{}, fmt.Errorf("openssh files: %w", err)
	}
	cert, err := c.signUserCert(pub, principal, validity, time.Now())
	if err != nil {
		return OpenSSHFiles{}, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "airlock "+principal)
	if err != nil {
		return OpenSSHFiles{}, fmt.Errorf("openssh files: %w", err)
	}
	f := OpenSSHFiles{
		Key:        filepath.Join(dir, "id_ed25519"),
		KnownHosts: filepath.Join(dir, "known_hosts"),
		Expires:    time.Unix(int64(cert.ValidBefore), 0),
	}
	if err := os.WriteFile(f.Key, pem.EncodeToMemory(block), 0o600); err != nil {
		return OpenSSHFiles{}, fmt.Errorf("openssh files: %w", err)
	}
	if err := os.WriteFile(f.Key+"-cert.pub", ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		return OpenSSHFiles{}, fmt.Errorf("openssh files: %w", err)
	}
	ca := "@cert-authority * " + string(ssh.MarshalAuthorizedKey(c.HostCA()))
	if err := os.WriteFile(f.KnownHosts, []byte(ca), 0o644); err != nil {
		return OpenSSHFiles{}, fmt.Errorf("openssh files: %w", err)
	}
	return f, nil
}
