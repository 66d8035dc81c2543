package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// Target is one machine to reach.
type Target struct {
	// Name is the sandbox name: the principal of our user certificate and,
	// unless HostKey is set, the principal the host certificate must list.
	Name string
	// Addr is host or host:port (port 22 if absent), typically the
	// sandbox's IP.
	Addr string
	// HostKey overrides host verification (e.g. PinnedHostKeyCheck for a
	// production host). Nil means HostCertCheck(host CA, Name).
	HostKey *HostKeyCheck
}

func (t Target) address() string {
	if _, _, err := net.SplitHostPort(t.Addr); err == nil {
		return t.Addr
	}
	return net.JoinHostPort(strings.Trim(t.Addr, "[]"), "22")
}

// Dialer opens authenticated connections with fresh user certificates.
type Dialer struct {
	CAs *CAs
	// User to log in as; default LoginUser (root).
	User string
	// CertValidity of each connection's user certificate; 0 means
	// DefaultUserCertValidity.
	CertValidity time.Duration
	// Timeout bounds TCP connect plus SSH handshake; default 30 s.
	Timeout time.Duration
	// Policy governs ReadFile/WriteFile; nil means DefaultPathPolicy().
	Policy *PathPolicy
	// MaxReadBytes caps ReadFile; 0 means DefaultMaxReadBytes.
	MaxReadBytes int64

	now func() time.Time // tests issue expired certificates through it
}

// Dial connects to t, authenticating with a new user certificate for
// t.Name and verifying the host as described on Target.HostKey. A refused
// certificate yields an error wrapping ErrAuthRefused; a rejected host key
// one wrapping ErrHostKey.
func (d *Dialer) Dial(ctx context.Context, t Target) (*Client, error) {
	if d.CAs == nil {
		return nil, errors.New("dial: dialer has no CAs")
	}
	if t.Name == "" || t.Addr == "" {
		return nil, errors.New("dial: target needs Name and Addr")
	}
	now := time.Now()
	if d.now != nil {
		now = d.now()
	}
	signer, err := d.CAs.userCert(t.Name, d.CertValidity, now)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", t.Name, err)
	}
	cert := signer.PublicKey().(*ssh.Certificate)

	check := HostCertCheck(d.CAs.HostCA(), t.Name)
	if t.HostKey != nil {
		check = *t.HostKey
	}
	user := d.User
	if user == "" {
		user = LoginUser
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	cfg := &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   check.Callback,
		HostKeyAlgorithms: check.Algorithms,
		Timeout:           timeout,
	}

	addr := t.address()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", t.Name, addr, err)
	}
	// Abort the handshake if ctx ends: closing the socket unblocks it.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	sconn, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if !stop() {
		if err == nil {
			sconn.Close()
		}
		return nil, fmt.Errorf("dial %s at %s: handshake: %w", t.Name, addr, context.Cause(ctx))
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s at %s: %w", t.Name, addr, classifyHandshakeErr(err, cert))
	}
	return newClient(ssh.NewClient(sconn, chans, reqs), t, cert, d), nil
}

func classifyHandshakeErr(err error, cert *ssh.Certificate) error {
	if errors.Is(err, ErrHostKey) {
		return err
	}
	if strings.Contains(err.Error(), "unable to authenticate") {
		return fmt.Errorf("%w: server refused user certificate for principal %q (valid %s to %s; expired, wrong principal or untrusted CA?): %w",
			ErrAuthRefused, strings.Join(cert.ValidPrincipals, ","),
			time.Unix(int64(cert.ValidAfter), 0).UTC().Format(time.RFC3339),
			time.Unix(int64(cert.ValidBefore), 0).UTC().Format(time.RFC3339), err)
	}
	return err
}

// Sessions per connection: OpenSSH allows 10 by default (MaxSessions).
// Commands use up to 8, leaving room for the sessions that kill timed-out
// commands.
const (
	maxSessions     = 8
	maxKillSessions = 2
)

// Client is one authenticated SSH connection to a sandbox. It is safe for
// concurrent use; each Exec, ReadFile or WriteFile runs in its own session.
type Client struct {
	name       string
	addr       string
	conn       *ssh.Client
	certExpiry time.Time
	policy     PathPolicy
	maxRead    int64

	sessions chan struct{} // semaphore of open sessions
	kills    chan struct{} // semaphore of kill sessions
	done     chan struct{} // closed when the connection ends
	lastUsed atomic.Int64  // unix nanos of the last operation start

	mu       sync.Mutex
	inflight int
	retired  bool // close once idle (see retire)
	closed   bool
}

func newClient(conn *ssh.Client, t Target, cert *ssh.Certificate, d *Dialer) *Client {
	policy := DefaultPathPolicy()
	if d.Policy != nil {
		policy = *d.Policy
	}
	maxRead := d.MaxReadBytes
	if maxRead <= 0 {
		maxRead = DefaultMaxReadBytes
	}
	c := &Client{
		name:       t.Name,
		addr:       t.address(),
		conn:       conn,
		certExpiry: time.Unix(int64(cert.ValidBefore), 0),
		policy:     policy,
		maxRead:    maxRead,
		sessions:   make(chan struct{}, maxSessions),
		kills:      make(chan struct{}, maxKillSessions),
		done:       make(chan struct{}),
	}
	c.lastUsed.Store(time.Now().UnixNano())
	go func() {
		_ = conn.Wait()
		close(c.done)
	}()
	return c
}

// Name is the sandbox name this client authenticated as.
func (c *Client) Name() string { return c.name }

// Addr is the host:port dialled.
func (c *Client) Addr() string { return c.addr }

// CertExpiry is when the user certificate used to log in expires. An open
// connection outlives it; the Pool re-dials before it.
func (c *Client) CertExpiry() time.Time { return c.certExpiry }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Alive reports whether the connection has not ended.
func (c *Client) Alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Close ends the connection; operations in flight fail.
func (c *Client) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if already {
		return nil
	}
	return c.conn.Close()
}

// begin registers an operation and takes a session slot.
func (c *Client) begin(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.inflight++
	c.mu.Unlock()
	c.lastUsed.Store(time.Now().UnixNano())
	select {
	case c.sessions <- struct{}{}:
		return nil
	case <-ctx.Done():
		c.end(false)
		return ctx.Err()
	case <-c.done:
		c.end(false)
		return ErrClosed
	}
}

func (c *Client) end(holdsSlot bool) {
	if holdsSlot {
		<-c.sessions
	}
	c.mu.Lock()
	c.inflight--
	idleRetired := c.retired && c.inflight == 0
	c.mu.Unlock()
	if idleRetired {
		c.Close()
	}
}

// retire closes the client as soon as no operation is running on it, but
// not before grace has passed, so a caller that just got it from the pool
// can still start its operation.
func (c *Client) retire(grace time.Duration) {
	time.AfterFunc(grace, func() {
		c.mu.Lock()
		c.retired = true
		idle := c.inflight == 0
		c.mu.Unlock()
		if idle {
			c.Close()
		}
	})
}

// ping sends a keepalive and waits up to timeout for any reply.
func (c *Client) ping(timeout time.Duration) bool {
	res := make(chan error, 1)
	go func() {
		_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
		res <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-res:
		return err == nil
	case <-c.done:
		return false
	case <-t.C:
		return false
	}
}

// newSession opens a session, giving up when ctx ends. A session that
// cannot be opened before a deadline on a live-looking connection means the
// connection is wedged (e.g. the guest was reverted): it is closed so the
// pool re-dials.
func (c *Client) newSession(ctx context.Context) (*ssh.Session, error) {
	type result struct {
		s   *ssh.Session
		err error
	}
	res := make(chan result, 1)
	go func() {
		s, err := c.conn.NewSession()
		res <- result{s, err}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			return nil, fmt.Errorf("open session on %s: %w", c.name, r.err)
		}
		return r.s, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			c.Close()
		}
		go func() {
			if r := <-res; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, fmt.Errorf("open session on %s: %w", c.name, ctx.Err())
	}
}
