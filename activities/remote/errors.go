// Package remote reaches sandboxes over SSH: Airlock's user and host
// certificate authorities, host-key verification, script execution over
// stdin with bounded output capture, a per-sandbox connection pool, and file
// reads and writes governed by a path policy.
//
// It is plain Go on golang.org/x/crypto/ssh; the Temporal adapter lives
// elsewhere and calls this API. Tests run against a real OpenSSH sshd started
// by the remotetest subpackage.
package remote

import "errors"

// Sentinel errors. Every error returned by this package wraps at most one of
// them, so callers can branch with errors.Is.
var (
	// ErrTimeout: a command ran longer than its timeout; the remote
	// processes were killed.
	ErrTimeout = errors.New("remote command timed out")
	// ErrPathPolicy: a file operation named a path the policy forbids.
	ErrPathPolicy = errors.New("path policy")
	// ErrAuthRefused: sshd refused our user certificate (expired, wrong
	// principal, or signed by a CA it does not trust).
	ErrAuthRefused = errors.New("ssh authentication refused")
	// ErrHostKey: the server's host key or certificate failed verification.
	ErrHostKey = errors.New("ssh host key rejected")
	// ErrTooLarge: a file is larger than the read cap.
	ErrTooLarge = errors.New("file too large")
	// ErrBadValidity: a requested certificate validity is out of range.
	ErrBadValidity = errors.New("certificate validity out of range")
	// ErrClosed: the client or pool was closed.
	ErrClosed = errors.New("ssh connection closed")
)
