package remote

import (
	"bytes"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyCheck says how a server's host key is verified: the callback, and
// the host key algorithms to offer so that the server presents the kind of
// key the callback expects (a certificate, or a plain pinned key).
type HostKeyCheck struct {
	Callback   ssh.HostKeyCallback
	Algorithms []string
}

// HostCertCheck accepts only an ed25519 host certificate signed by hostCA,
// valid now, listing principal (the sandbox name). The dial address (an
// IP) plays no part: identity is the certificate principal.
func HostCertCheck(hostCA ssh.PublicKey, principal string) HostKeyCheck {
	return HostKeyCheck{
		Callback:   HostCertCallback(hostCA, principal),
		Algorithms: []string{ssh.CertAlgoED25519v01},
	}
}

// HostCertCallback is the host-key callback behind HostCertCheck, built on
// ssh.CertChecker. Errors wrap ErrHostKey.
func HostCertCallback(hostCA ssh.PublicKey, principal string) ssh.HostKeyCallback {
	return hostCertCallback(hostCA, principal, time.Now)
}

func hostCertCallback(hostCA ssh.PublicKey, principal string, clock func() time.Time) ssh.HostKeyCallback {
	caBlob := hostCA.Marshal()
	checker := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
			return bytes.Equal(auth.Marshal(), caBlob)
		},
		HostKeyFallback: func(string, net.Addr, ssh.PublicKey) error {
			return fmt.Errorf("server presented a plain host key, want a certificate from the Airlock host CA")
		},
		Clock: clock,
	}
	return func(addr string, remote net.Addr, key ssh.PublicKey) error {
		if cert, ok := key.(*ssh.Certificate); ok && !bytes.Equal(cert.SignatureKey.Marshal(), caBlob) {
			return fmt.Errorf("%w: %s (expecting %q) presented a host certificate signed by %s, not by the Airlock host CA %s",
				ErrHostKey, addr, principal, ssh.FingerprintSHA256(cert.SignatureKey), ssh.FingerprintSHA256(hostCA))
		}
		// CertChecker takes the principal from the host part of addr; hand
		// it the expected name instead of the IP we dialled.
		if err := checker.CheckHostKey(net.JoinHostPort(principal, "22"), remote, key); err != nil {
			return fmt.Errorf("%w: %s (expecting %q): %w", ErrHostKey, addr, principal, err)
		}
		return nil
	}
}

// PinnedHostKeyCheck accepts exactly one plain host key, for hosts whose key
// is known in advance (production). authorizedKey is a public key in
// authorized_keys or known_hosts-value format ("ssh-ed25519 AAAA...").
func PinnedHostKeyCheck(authorizedKey []byte) (HostKeyCheck, error) {
	key, _, _, _, err := ssh.ParseAuthorizedKey(authorizedKey)
	if err != nil {
		return HostKeyCheck{}, fmt.Errorf("parse pinned host key: %w", err)
	}
	fixed := ssh.FixedHostKey(key)
	return HostKeyCheck{
		Callback:   wrapHostKeyErr(fixed),
		Algorithms: plainAlgorithms(key.Type()),
	}, nil
}

// KnownHostsCheck verifies plain host keys against OpenSSH known_hosts
// files. Unknown hosts and mismatching keys are refused; nothing is ever
// added to the files.
func KnownHostsCheck(files ...string) (HostKeyCheck, error) {
	cb, err := knownhosts.New(files...)
	if err != nil {
		return HostKeyCheck{}, fmt.Errorf("load known_hosts: %w", err)
	}
	return HostKeyCheck{
		Callback: wrapHostKeyErr(cb),
		Algorithms: []string{
			ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
			ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
		},
	}, nil
}

func wrapHostKeyErr(cb ssh.HostKeyCallback) ssh.HostKeyCallback {
	return func(addr string, remote net.Addr, key ssh.PublicKey) error {
		if err := cb(addr, remote, key); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrHostKey, addr, err)
		}
		return nil
	}
}

func plainAlgorithms(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{keyType}
}
