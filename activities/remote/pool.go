package remote

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// PoolOptions tune a Pool. Zero values take the defaults.
type PoolOptions struct {
	// RenewBefore: a connection whose user certificate expires within this
	// window is replaced by a fresh dial. Default 60 s.
	RenewBefore time.Duration
	// IdleCheck: a connection idle for longer is probed with a keepalive
	// before reuse. Default 30 s; negative disables probing.
	IdleCheck time.Duration
	// PingTimeout bounds that probe. Default 5 s.
	PingTimeout time.Duration
	// RetireGrace: a replaced (still healthy) connection stays open at
	// least this long, and then until its running operations end, so
	// callers that just obtained it are not cut off. Default 30 s.
	RetireGrace time.Duration
}

// PoolStats counts what a Pool did.
type PoolStats struct {
	Dials  int64 // dial attempts
	Reuses int64 // Gets answered with an existing connection
}

// Pool holds one connection per sandbox name and hands it out for reuse.
// It re-dials when the connection has ended, fails a keepalive after being
// idle, points at another address, or when its certificate nears expiry.
// It is safe for concurrent use; concurrent Gets for one sandbox share a
// single dial.
type Pool struct {
	dialer *Dialer
	opts   PoolOptions
	now    func() time.Time

	mu     sync.Mutex
	slots  map[string]*poolSlot
	closed bool

	dials, reuses atomic.Int64
}

type poolSlot struct {
	mu      sync.Mutex
	client  *Client
	dropped bool
}

// NewPool returns a pool that dials with d.
func NewPool(d *Dialer, opts PoolOptions) *Pool {
	if opts.RenewBefore <= 0 {
		opts.RenewBefore = 60 * time.Second
	}
	if opts.IdleCheck == 0 {
		opts.IdleCheck = 30 * time.Second
	}
	if opts.PingTimeout <= 0 {
		opts.PingTimeout = 5 * time.Second
	}
	if opts.RetireGrace <= 0 {
		opts.RetireGrace = 30 * time.Second
	}
	return &Pool{dialer: d, opts: opts, now: time.Now, slots: map[string]*poolSlot{}}
}

// Get returns the connection for t.Name, dialling if there is none usable.
func (p *Pool) Get(ctx context.Context, t Target) (*Client, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		s := p.slots[t.Name]
		if s == nil {
			s = &poolSlot{}
			p.slots[t.Name] = s
		}
		p.mu.Unlock()

		s.mu.Lock()
		if s.dropped { // dropped while we waited: start over with a new slot
			s.mu.Unlock()
			continue
		}
		c, err := p.getLocked(ctx, s, t)
		s.mu.Unlock()
		return c, err
	}
}

func (p *Pool) getLocked(ctx context.Context, s *poolSlot, t Target) (*Client, error) {
	if c := s.client; c != nil {
		if p.reusable(c, t) {
			p.reuses.Add(1)
			return c, nil
		}
		s.client = nil
		if c.Alive() {
			c.retire(p.opts.RetireGrace)
		} else {
			c.Close()
		}
	}
	p.dials.Add(1)
	c, err := p.dialer.Dial(ctx, t)
	if err != nil {
		return nil, err
	}
	s.client = c
	return c, nil
}

func (p *Pool) reusable(c *Client, t Target) bool {
	if !c.Alive() || c.addr != t.address() {
		return false
	}
	if !p.now().Before(c.certExpiry.Add(-p.opts.RenewBefore)) {
		return false
	}
	idle := time.Since(time.Unix(0, c.lastUsed.Load()))
	if p.opts.IdleCheck > 0 && idle > p.opts.IdleCheck {
		return c.ping(p.opts.PingTimeout)
	}
	return true
}

// Drop closes the connection for name at once (operations running on it
// fail), so the next Get dials afresh. Call it after reverting a sandbox
// to a snapshot: the guest's TCP state is then in the past.
func (p *Pool) Drop(name string) {
	p.mu.Lock()
	s := p.slots[name]
	delete(p.slots, name)
	p.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	s.dropped = true
	if s.client != nil {
		s.client.Close()
		s.client = nil
	}
	s.mu.Unlock()
}

// Stats reports dial and reuse counts.
func (p *Pool) Stats() PoolStats {
	return PoolStats{Dials: p.dials.Load(), Reuses: p.reuses.Load()}
}

// Close closes every connection; later Gets fail with ErrClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	slots := p.slots
	p.slots = map[string]*poolSlot{}
	p.mu.Unlock()
	for _, s := range slots {
		s.mu.Lock()
		s.dropped = true
		if s.client != nil {
			s.client.Close()
			s.client = nil
		}
		s.mu.Unlock()
	}
	return nil
}
