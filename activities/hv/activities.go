// Package hv holds the activities the hypervisor worker serves on
// airlock.hv.<host>: sandbox lifecycle (over the sandbox.Hypervisor seam),
// commands and files over SSH (activities/remote), manifests and captured
// changes (activities/changes), and playbook verification on a fresh
// clone (activities/playbook + activities/apply). Sandbox networks are
// reachable only from their own host, so all of this runs there.
package hv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/temporal"

	hb "github.com/airlock-dev/airlock/activities/heartbeat"
	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/store/audit"
)

// Artifacts is the part of the store the hypervisor worker uses.
type Artifacts interface {
	ReadArtifact(ctx context.Context, id string) ([]byte, error)
	PutArtifact(ctx context.Context, kind string, r io.Reader) (audit.ArtifactRef, error)
}

// Activities is registered on the host queue.
type Activities struct {
	Host      string
	HV        sandbox.Hypervisor
	CAs       *remote.CAs
	Pool      *remote.Pool
	Artifacts Artifacts
	// ReadyTimeout bounds Create from request to first SSH command.
	ReadyTimeout time.Duration
	// Baselines, if set, indexes baseline manifests by the sandbox's
	// image lineage (see ImageBaselines).
	Baselines *ImageBaselines

	mu  sync.Mutex
	ips map[string]string
}

// ErrTypeBadInput marks non-retryable bad input (the workflow's type).
const ErrTypeBadInput = "BadInput"

// nonRetryable maps typed errors to Temporal application errors: bad input
// is never retried; capacity gets its own type for the overcommit gate.
func nonRetryable(err error) error {
	if err == nil {
		return nil
	}
	var ce *sandbox.CapacityError
	switch {
	case errors.As(err, &ce):
		return temporal.NewNonRetryableApplicationError(err.Error(), "NoCapacity", err, ce.WantMiB, ce.FreeMiB)
	case errors.Is(err, sandbox.ErrBadInput), errors.Is(err, remote.ErrPathPolicy), errors.Is(err, remote.ErrTooLarge):
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, err)
	}
	return err
}

// Capacity reports what the host has left.
func (a *Activities) Capacity(ctx context.Context) (sandbox.Capacity, error) {
	c, err := a.HV.Capacity(ctx)
	return c, nonRetryable(err)
}

// CreateSandbox clones, boots (or restores) and personalises a sandbox,
// and returns once an SSH command has succeeded in it. A retry finds the
// VM it made the first time.
func (a *Activities) CreateSandbox(ctx context.Context, in sandbox.CreateInput) (sandbox.Info, error) {
	if in.Owner == "" || in.Image == "" {
		return sandbox.Info{}, nonRetryable(fmt.Errorf("%w: create needs owner and image", sandbox.ErrBadInput))
	}
	start := time.Now()
	name := sandbox.NameFor(in.Owner, in.Suffix)
	stop := heartbeat(ctx, "create "+name)
	defer stop()
	sb, err := a.HV.Create(ctx, sandbox.Spec{Name: name, Owner: in.Owner, Image: in.Image, MemoryMiB: in.Memory, Network: in.Network, Boot: in.Boot, Overcommit: in.Overcommit})
	if err != nil {
		return sandbox.Info{}, nonRetryable(fmt.Errorf("create %s: %w", name, err))
	}
	if sb.State != "running" || sb.IP == "" {
		files, err := a.CAs.SandboxIdentityFiles(name, sb.IP)
		if err != nil {
			return sandbox.Info{}, fmt.Errorf("identity for %s: %w", name, err)
		}
		id := &sandbox.Identity{Hostname: name, MachineID: randomHex(16), Files: files, Entropy: randomBytes(512)}
		if sb, err = a.HV.Start(ctx, name, id); err != nil {
			return sandbox.Info{}, nonRetryable(fmt.Errorf("start %s: %w", name, err))
		}
	}
	a.remember(name, sb.IP)
	if err := a.waitSSH(ctx, name, sb.IP); err != nil {
		return sandbox.Info{}, err
	}
	return sandbox.Info{Name: name, IP: sb.IP, Image: sb.Image, Restored: sb.Restored, ReadyMs: time.Since(start).Milliseconds(), Principal: name}, nil
}

// waitSSH dials until a command runs or the ready timeout passes (a
// cold-booted guest's sshd is started by identity activation, so the first
// dial may race it).
func (a *Activities) waitSSH(ctx context.Context, name, ip string) error {
	timeout := a.ReadyTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 50 * time.Millisecond
	for {
		c, err := a.Pool.Get(ctx, remote.Target{Name: name, Addr: ip})
		if err == nil {
			if err = c.Probe(ctx, 30*time.Second); err == nil {
				return nil
			}
		}
		if errors.Is(err, remote.ErrHostKey) || errors.Is(err, remote.ErrAuthRefused) {
			return fmt.Errorf("ssh to %s: %w", name, err) // not a race: identity is wrong
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ssh to %s (%s) not ready: %w (last error: %v)", name, ip, ctx.Err(), err)
		case <-time.After(delay):
		}
		if delay < time.Second {
			delay *= 2
		}
	}
}

// DestroySandbox removes everything of the sandbox. Idempotent.
func (a *Activities) DestroySandbox(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, sandbox.NamePrefix) {
		return nonRetryable(fmt.Errorf("%w: %q is not a sandbox name", sandbox.ErrBadInput, name))
	}
	a.Pool.Drop(name)
	a.forget(name)
	return nonRetryable(a.HV.Destroy(ctx, name))
}

// SetEgress opens or closes the sandbox's route out.
func (a *Activities) SetEgress(ctx context.Context, in sandbox.EgressInput) error {
	return nonRetryable(a.HV.SetEgress(ctx, in.Sandbox, in.Open))
}

// CreateSnapshot takes a named snapshot (with memory) of a sandbox.
func (a *Activities) CreateSnapshot(ctx context.Context, in sandbox.SnapshotInput) error {
	_, err := a.HV.CreateSnapshot(ctx, in.Sandbox, in.Name)
	return nonRetryable(err)
}

// RestoreSnapshot reverts a sandbox; the SSH connection is re-dialled.
func (a *Activities) RestoreSnapshot(ctx context.Context, in sandbox.SnapshotInput) error {
	a.Pool.Drop(in.Sandbox)
	if err := a.HV.RestoreSnapshot(ctx, in.Sandbox, in.Name); err != nil {
		return nonRetryable(err)
	}
	ip, err := a.ip(ctx, in.Sandbox)
	if err != nil {
		return err
	}
	return a.waitSSH(ctx, in.Sandbox, ip)
}

// ListSnapshots lists a sandbox's snapshots.
func (a *Activities) ListSnapshots(ctx context.Context, name string) ([]sandbox.Snapshot, error) {
	s, err := a.HV.ListSnapshots(ctx, name)
	return s, nonRetryable(err)
}

// DeleteSnapshot deletes one snapshot.
func (a *Activities) DeleteSnapshot(ctx context.Context, in sandbox.SnapshotInput) error {
	return nonRetryable(a.HV.DeleteSnapshot(ctx, in.Sandbox, in.Name))
}

func (a *Activities) remember(name, ip string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ips == nil {
		a.ips = map[string]string{}
	}
	a.ips[name] = ip
}

func (a *Activities) forget(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.ips, name)
}

// ip finds a sandbox's address, asking the hypervisor after a restart.
func (a *Activities) ip(ctx context.Context, name string) (string, error) {
	a.mu.Lock()
	ip := a.ips[name]
	a.mu.Unlock()
	if ip != "" {
		return ip, nil
	}
	sb, err := a.HV.Get(ctx, name)
	if err != nil {
		return "", nonRetryable(fmt.Errorf("sandbox %s: %w", name, err))
	}
	if sb.IP == "" {
		return "", fmt.Errorf("sandbox %s has no IP yet", name)
	}
	a.remember(name, sb.IP)
	return sb.IP, nil
}

// client returns the pooled SSH connection of a sandbox.
func (a *Activities) client(ctx context.Context, name string) (*remote.Client, error) {
	ip, err := a.ip(ctx, name)
	if err != nil {
		return nil, err
	}
	c, err := a.Pool.Get(ctx, remote.Target{Name: name, Addr: ip})
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", name, err)
	}
	return c, nil
}

func tempFile(pattern string) (*os.File, func(), error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close(); os.Remove(f.Name()) }, nil
}

// heartbeat keeps a host activity alive every few seconds until stopped.
func heartbeat(ctx context.Context, what string) (stop func()) {
	return hb.Every(ctx, 5*time.Second, what)
}
