package remote

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// Certificate lifetimes.
const (
	// DefaultUserCertValidity is used when UserCert is asked for validity 0.
	DefaultUserCertValidity = 5 * time.Minute
	MinUserCertValidity     = 1 * time.Minute
	MaxUserCertValidity     = 10 * time.Minute

	// ClockSkew is how far in the past certificates start to be valid.
	// Sandbox clocks can lag: a guest restored from a memory image resumes
	// with the clock it was saved with until the hypervisor syncs it, and a
	// certificate whose ValidAfter is "now" on the worker would then be
	// "not yet valid" in the guest and sshd would refuse it. Backdating does
	// not lengthen a certificate's useful life: ValidBefore still bounds it.
	ClockSkew = 2 * time.Minute

	// HostCertValidity bounds a sandbox host certificate. Sandboxes live for
	// the length of one task (hours to a few days); a fresh identity is
	// issued for every clone.
	HostCertValidity = 30 * 24 * time.Hour

	// LoginUser is the account Airlock logs in as inside sandboxes.
	LoginUser = "root"
)

// Paths of the CA key files under the state directory, and of the identity
// files inside a guest (see docs/ARCHITECTURE.md, golden image contract).
const (
	caDirName     = "ca"
	userCAName    = "user_ca"
	hostCAName    = "host_ca"
	GuestSSHDir   = "/etc/ssh/airlock"
	GuestUserCA   = GuestSSHDir + "/user_ca.pub"
	GuestHostKey  = GuestSSHDir + "/host_ed25519_key"
	GuestHostPub  = GuestHostKey + ".pub"
	GuestHostCert = GuestHostKey + "-cert.pub"
	// GuestPrincipalsDir holds one file per login user (AuthorizedPrincipalsFile %u).
	GuestPrincipalsDir = GuestSSHDir + "/principals"
)

// CAs holds Airlock's two SSH certificate authorities: the user CA signs the
// short-lived certificates the worker logs in with, the host CA signs each
// sandbox's host key so the worker never has to trust a key blindly.
type CAs struct {
	user ssh.Signer
	host ssh.Signer
}

// LoadOrCreateCAs loads the CA keys from <stateDir>/ca, creating missing
// ones (ed25519, OpenSSH private key format, mode 0600, directory 0700, plus
// a .pub next to each). A key file readable by group or others is refused.
// Concurrent callers on one host end up with the same keys: a new key is
// written to a temporary file and linked into place only if absent.
func LoadOrCreateCAs(stateDir string) (*CAs, error) {
	dir := filepath.Join(stateDir, caDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ca dir: %w", err)
	}
	user, err := loadOrCreateKey(filepath.Join(dir, userCAName), "airlock-user-ca")
	if err != nil {
		return nil, fmt.Errorf("user ca: %w", err)
	}
	host, err := loadOrCreateKey(filepath.Join(dir, hostCAName), "airlock-host-ca")
	if err != nil {
		return nil, fmt.Errorf("host ca: %w", err)
	}
	return &CAs{user: user, host: host}, nil
}

func loadOrCreateKey(path, comment string) (ssh.Signer, error) {
	signer, err := loadKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKey(path, comment); err != nil {
			return nil, err
		}
		signer, err = loadKey(path)
	}
	if err != nil {
		return nil, err
	}
	pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
	pub = append(bytes.TrimSuffix(pub, []byte("\n")), []byte(" "+comment+"\n")...)
	if old, err := os.ReadFile(path + ".pub"); err != nil || !bytes.Equal(old, pub) {
		if err := writeFileAtomic(path+".pub", pub, 0o644); err != nil {
			return nil, fmt.Errorf("write %s.pub: %w", path, err)
		}
	}
	return signer, nil
}

func loadKey(path string) (ssh.Signer, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("ca key %s is not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("ca key %s has mode %04o, refusing to use it: must not be readable by group or others (chmod 600 %s)", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("parse ca key %s: %w", path, err)
	}
	if t := signer.PublicKey().Type(); t != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("ca key %s is %s, want ed25519", path, t)
	}
	return signer, nil
}

func createKey(path, comment string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	tmp, err := writeTemp(path, pem.EncodeToMemory(block), 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	// Link fails if another process created the key first; theirs wins.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("install key %s: %w", path, err)
	}
	return nil
}

func writeTemp(path string, data []byte, mode os.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("create temp for %s: %w", path, err)
	}
	name := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(name)
		return "", fmt.Errorf("write temp for %s: %w", path, werr)
	}
	return name, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// UserCAPublicKey is the user CA's public key in authorized_keys format: the
// content of the guest's TrustedUserCAKeys file.
func (c *CAs) UserCAPublicKey() []byte { return ssh.MarshalAuthorizedKey(c.user.PublicKey()) }

// HostCAPublicKey is the host CA's public key in authorized_keys format.
func (c *CAs) HostCAPublicKey() []byte { return ssh.MarshalAuthorizedKey(c.host.PublicKey()) }

// HostCA is the host CA's public key, for host-certificate verification.
func (c *CAs) HostCA() ssh.PublicKey { return c.host.PublicKey() }

// UserCert returns a signer holding a fresh ed25519 key and a user
// certificate for it, valid for logging in as root on the one sandbox whose
// AuthorizedPrincipalsFile lists principal. validity 0 means
// DefaultUserCertValidity; otherwise it must lie within
// [MinUserCertValidity, MaxUserCertValidity].
func (c *CAs) UserCert(principal string, validity time.Duration) (ssh.Signer, error) {
	return c.userCert(principal, validity, time.Now())
}

func (c *CAs) userCert(principal string, validity time.Duration, now time.Time) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("user cert: generate key: %w", err)
	}
	key, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("user cert: %w", err)
	}
	cert, err := c.signUserCert(key.PublicKey(), principal, validity, now)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, fmt.Errorf("user cert: %w", err)
	}
	return signer, nil
}

// signUserCert certifies pub as a user key for principal.
func (c *CAs) signUserCert(pub ssh.PublicKey, principal string, validity time.Duration, now time.Time) (*ssh.Certificate, error) {
	if validity == 0 {
		validity = DefaultUserCertValidity
	}
	if validity < MinUserCertValidity || validity > MaxUserCertValidity {
		return nil, fmt.Errorf("%w: %s not within [%s, %s]", ErrBadValidity, validity, MinUserCertValidity, MaxUserCertValidity)
	}
	if principal == "" {
		return nil, errors.New("user cert: empty principal")
	}
	serial := randomSerial()
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          serial,
		CertType:        ssh.UserCert,
		KeyId:           fmt.Sprintf("airlock:%s:%016x", principal, serial),
		ValidPrincipals: []string{principal},
		ValidAfter:      unixSeconds(now.Add(-ClockSkew)),
		ValidBefore:     unixSeconds(now.Add(validity)),
		// No extensions: no pty, no forwarding. Exec over plain channels
		// is all Airlock needs.
		Permissions: ssh.Permissions{},
	}
	if err := cert.SignCert(rand.Reader, c.user); err != nil {
		return nil, fmt.Errorf("user cert: sign: %w", err)
	}
	return cert, nil
}

// HostIdentity is a sandbox's SSH host identity: a new ed25519 key pair and
// a host certificate signed by Airlock's host CA.
type HostIdentity struct {
	PrivateKey  []byte   // OpenSSH PEM private key
	PublicKey   []byte   // authorized_keys line
	Certificate []byte   // host certificate, authorized_keys format line
	Principals  []string // names the certificate is valid for
}

// HostIdentity creates a host key for a sandbox and certifies it for
// hostname (the sandbox name, which is what clients verify) plus any extra
// principals such as its IP address.
func (c *CAs) HostIdentity(hostname string, principals []string) (HostIdentity, error) {
	return c.hostIdentity(hostname, principals, time.Now())
}

func (c *CAs) hostIdentity(hostname string, principals []string, now time.Time) (HostIdentity, error) {
	if hostname == "" {
		return HostIdentity{}, errors.New("host identity: empty hostname")
	}
	names := []string{hostname}
	for _, p := range principals {
		if p != "" && !slices.Contains(names, p) {
			names = append(names, p)
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return HostIdentity{}, fmt.Errorf("host identity: generate key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return HostIdentity{}, fmt.Errorf("host identity: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "root@"+hostname)
	if err != nil {
		return HostIdentity{}, fmt.Errorf("host identity: marshal key: %w", err)
	}
	serial := randomSerial()
	cert := &ssh.Certificate{
		Key:             sshPub,
		Serial:          serial,
		CertType:        ssh.HostCert,
		KeyId:           fmt.Sprintf("airlock-host:%s:%016x", hostname, serial),
		ValidPrincipals: names,
		ValidAfter:      unixSeconds(now.Add(-ClockSkew)),
		ValidBefore:     unixSeconds(now.Add(HostCertValidity)),
	}
	if err := cert.SignCert(rand.Reader, c.host); err != nil {
		return HostIdentity{}, fmt.Errorf("host identity: sign: %w", err)
	}
	return HostIdentity{
		PrivateKey:  pem.EncodeToMemory(block),
		PublicKey:   ssh.MarshalAuthorizedKey(sshPub),
		Certificate: ssh.MarshalAuthorizedKey(cert),
		Principals:  names,
	}, nil
}

// GuestFiles lists the files a guest needs so that its sshd presents this
// identity and accepts user certificates for principal (normally the
// sandbox name) as root. Paths follow the golden image contract.
func (c *CAs) GuestFiles(id HostIdentity, principal string) []sandbox.GuestFile {
	return []sandbox.GuestFile{
		{Path: GuestUserCA, Mode: 0o644, Content: c.UserCAPublicKey()},
		{Path: GuestHostKey, Mode: 0o600, Content: id.PrivateKey},
		{Path: GuestHostPub, Mode: 0o644, Content: id.PublicKey},
		{Path: GuestHostCert, Mode: 0o644, Content: id.Certificate},
		{Path: GuestPrincipalsDir + "/" + LoginUser, Mode: 0o644, Content: []byte(principal + "\n")},
	}
}

// SandboxIdentityFiles issues a fresh host identity for the sandbox name
// (plus extra principals) and returns the guest files for it, with name as
// the login principal.
func (c *CAs) SandboxIdentityFiles(name string, extraPrincipals ...string) ([]sandbox.GuestFile, error) {
	id, err := c.HostIdentity(name, extraPrincipals)
	if err != nil {
		return nil, err
	}
	return c.GuestFiles(id, name), nil
}

func randomSerial() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return binary.BigEndian.Uint64(b[:])
}

func unixSeconds(t time.Time) uint64 {
	if t.Unix() < 0 {
		return 0
	}
	return uint64(t.Unix())
}
