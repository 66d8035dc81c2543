package remote

import (
	"time"

	"golang.org/x/crypto/ssh"
)

// Test hooks: issue certificates and judge expiry as of another time.

func (c *CAs) UserCertAt(principal string, validity time.Duration, now time.Time) (ssh.Signer, error) {
	return c.userCert(principal, validity, now)
}

func SetDialerClock(d *Dialer, now func() time.Time) { d.now = now }

func SetPoolClock(p *Pool, now func() time.Time) { p.now = now }
