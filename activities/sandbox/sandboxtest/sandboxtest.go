// Package sandboxtest is the conformance suite of the sandbox.Hypervisor
// interface. Every driver runs it: the libvirt driver against libvirt's
// test driver in every `go test`, and against real QEMU VMs when the host
// has libvirtd and the golden image.
package sandboxtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// Caps says what the target can do and how to look behind the interface.
type Caps struct {
	// Image is a golden image the host has.
	Image string
	// Boot: Start, Stop and snapshots of a running sandbox work (real VMs,
	// or a driver with a fake guest agent).
	Boot bool
	// RealGuest: the guest is a real machine whose disk and memory
	// snapshots revert (checked through the GuestFiles interface).
	RealGuest bool
	// OverMemoryMiB is a memory request the host cannot satisfy
	// (default 1 TiB).
	OverMemoryMiB int
	// Timeout bounds each test (default 2 min; real boots need more).
	Timeout time.Duration
}

// Leftoverer is implemented by drivers that can list what remains of a
// sandbox (domain, disks, DHCP entries, egress, files). The suite
// requires it to be empty after Destroy and after each refused Create.
type Leftoverer interface {
	Leftovers(ctx context.Context, name string) ([]string, error)
}

// GuestFiles is implemented by drivers that can reach into a running
// guest out of band (the guest agent), to check identities and reverts.
type GuestFiles interface {
	ReadGuestFile(ctx context.Context, name, path string) ([]byte, error)
	WriteGuestFile(ctx context.Context, name, path string, content []byte) error
}

// EgressChecker is implemented by drivers that can say whether a
// sandbox's egress is open.
type EgressChecker interface {
	EgressOpen(ctx context.Context, name string) (bool, error)
}

// Owner returns a fresh owner ID, "test-<random>", so test VMs are easy to
// find and never collide with another run.
func Owner(t testing.TB) string {
	var b [5]byte
	rand.Read(b[:])
	return "test-" + hex.EncodeToString(b[:])
}

type suite struct {
	t    *testing.T
	hv   sandbox.Hypervisor
	caps Caps
	ctx  context.Context
}

// Run runs the conformance suite. newHV returns a fresh driver for one
// subtest (and registers its own cleanup).
func Run(t *testing.T, newHV func(t *testing.T) sandbox.Hypervisor, caps Caps) {
	if caps.OverMemoryMiB == 0 {
		caps.OverMemoryMiB = 1 << 20
	}
	if caps.Timeout == 0 {
		caps.Timeout = 2 * time.Minute
	}
	tests := []struct {
		name string
		boot bool
		fn   func(s *suite)
	}{
		{"CreateIsIdempotentForOwner", false, (*suite).createIdempotent},
		{"OwnedByOtherLeavesNothing", false, (*suite).ownedByOther},
		{"UnknownImageLeavesNothing", false, (*suite).unknownImage},
		{"BadInput", false, (*suite).badInput},
		{"CapacityErrorLeavesNothing", false, (*suite).capacity},
		{"DestroyIsIdempotent", false, (*suite).destroyIdempotent},
		{"List", false, (*suite).list},
		{"Reconcile", false, (*suite).reconcile},
		{"StartStopSnapshots", true, (*suite).lifecycle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.boot && !caps.Boot {
				t.Skip("target cannot boot sandboxes")
			}
			ctx, cancel := context.WithTimeout(context.Background(), caps.Timeout)
			defer cancel()
			tc.fn(&suite{t: t, hv: newHV(t), caps: caps, ctx: ctx})
		})
	}
}

// create makes a sandbox and registers its destruction.
func (s *suite) create(spec sandbox.Spec) sandbox.Sandbox {
	s.t.Helper()
	if spec.Owner == "" {
		spec.Owner = Owner(s.t)
	}
	if spec.Image == "" {
		spec.Image = s.caps.Image
	}
	sb, err := s.hv.Create(s.ctx, spec)
	require.NoError(s.t, err, "create")
	s.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.hv.Destroy(ctx, sb.Name); err != nil {
			s.t.Errorf("cleanup: destroy %s: %v", sb.Name, err)
		}
	})
	return sb
}

// noLeftovers asserts that nothing named name remains (if the driver can tell).
func (s *suite) noLeftovers(name string) {
	s.t.Helper()
	lo, ok := s.hv.(Leftoverer)
	if !ok {
		return
	}
	left, err := lo.Leftovers(s.ctx, name)
	require.NoError(s.t, err, "leftovers")
	assert.Empty(s.t, left, "leftovers of %s", name)
}

func (s *suite) createIdempotent() {
	t := s.t
	owner := Owner(t)
	a := s.create(sandbox.Spec{Owner: owner})
	assert.Equal(t, sandbox.NameFor(owner, ""), a.Name)
	assert.Equal(t, owner, a.Owner)
	assert.Equal(t, s.caps.Image, a.Image)
	assert.NotEmpty(t, a.UUID)
	assert.Regexp(t, `^52:54:00(:[0-9a-f]{2}){3}$`, a.MAC)
	assert.NotEmpty(t, a.IP, "IP is reserved before boot")
	assert.Equal(t, "shutoff", a.State)

	b, err := s.hv.Create(s.ctx, sandbox.Spec{Owner: owner, Image: s.caps.Image})
	require.NoError(t, err, "second create")
	assert.Equal(t, a, b, "a retried Create returns the same sandbox")

	got, err := s.hv.Get(s.ctx, a.Name)
	require.NoError(t, err)
	assert.Equal(t, a, got)

	// A second sandbox gets its own UUID, MAC and IP.
	c := s.create(sandbox.Spec{})
	assert.NotEqual(t, a.UUID, c.UUID)
	assert.NotEqual(t, a.MAC, c.MAC)
	assert.NotEqual(t, a.IP, c.IP)
}

func (s *suite) ownedByOther() {
	t := s.t
	a := s.create(sandbox.Spec{})
	before, err := s.hv.List(s.ctx)
	require.NoError(t, err)

	_, err = s.hv.Create(s.ctx, sandbox.Spec{Name: a.Name, Owner: Owner(t), Image: s.caps.Image})
	require.Error(t, err)
	assert.ErrorIs(t, err, sandbox.ErrOwnedByOther)
	assert.ErrorIs(t, err, sandbox.ErrBadInput)

	got, err := s.hv.Get(s.ctx, a.Name)
	require.NoError(t, err)
	assert.Equal(t, a, got, "the owner's sandbox is untouched")
	after, err := s.hv.List(s.ctx)
	require.NoError(t, err)
	assert.Equal(t, before, after, "nothing new was made")
}

func (s *suite) unknownImage() {
	t := s.t
	owner := Owner(t)
	_, err := s.hv.Create(s.ctx, sandbox.Spec{Owner: owner, Image: "no-such-image"})
	require.Error(t, err)
	assert.ErrorIs(t, err, sandbox.ErrUnknownImage)
	assert.ErrorIs(t, err, sandbox.ErrBadInput)
	assert.Contains(t, err.Error(), "no-such-image")
	_, err = s.hv.Get(s.ctx, sandbox.NameFor(owner, ""))
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	s.noLeftovers(sandbox.NameFor(owner, ""))
}

func (s *suite) badInput() {
	t := s.t
	for _, spec := range []sandbox.Spec{
		{Owner: "", Image: s.caps.Image},
		{Owner: Owner(t), Image: "../../etc"},
		{Owner: Owner(t), Name: "prod-web-1", Image: s.caps.Image},
		{Owner: Owner(t), Image: s.caps.Image, Boot: "sideways"},
	} {
		_, err := s.hv.Create(s.ctx, spec)
		assert.ErrorIs(t, err, sandbox.ErrBadInput, "spec %+v", spec)
		if spec.Owner != "" && spec.Name == "" {
			s.noLeftovers(sandbox.NameFor(spec.Owner, ""))
		}
	}
	err := s.hv.Destroy(s.ctx, "prod-web-1")
	assert.ErrorIs(t, err, sandbox.ErrBadInput, "Destroy refuses non-sandbox names")
	_, err = s.hv.Get(s.ctx, "sbx-"+strings.Repeat("x", 10)+"-absent")
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
}

func (s *suite) capacity() {
	t := s.t
	c, err := s.hv.Capacity(s.ctx)
	require.NoError(t, err)
	assert.Positive(t, c.TotalMemoryMiB)
	assert.Positive(t, c.FreeMemoryMiB)
	assert.LessOrEqual(t, c.FreeMemoryMiB, c.TotalMemoryMiB)
	assert.Positive(t, c.VCPUs)
	assert.Positive(t, c.MaxSandboxes)
	assert.GreaterOrEqual(t, c.Running, 0)

	owner := Owner(t)
	_, err = s.hv.Create(s.ctx, sandbox.Spec{Owner: owner, Image: s.caps.Image, MemoryMiB: s.caps.OverMemoryMiB})
	require.Error(t, err)
	assert.ErrorIs(t, err, sandbox.ErrNoCapacity)
	var ce *sandbox.CapacityError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, int64(s.caps.OverMemoryMiB), ce.WantMiB)
	assert.Less(t, ce.FreeMiB, ce.WantMiB)
	assert.NotErrorIs(t, err, sandbox.ErrBadInput, "capacity is retryable, not bad input")
	s.noLeftovers(sandbox.NameFor(owner, ""))

}

func (s *suite) destroyIdempotent() {
	t := s.t
	a := s.create(sandbox.Spec{})
	require.NoError(t, s.hv.Destroy(s.ctx, a.Name))
	require.NoError(t, s.hv.Destroy(s.ctx, a.Name), "second destroy")
	_, err := s.hv.Get(s.ctx, a.Name)
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	s.noLeftovers(a.Name)
	require.NoError(t, s.hv.Destroy(s.ctx, sandbox.NameFor(Owner(t), "")), "destroying what never existed")
}

func (s *suite) list() {
	t := s.t
	a := s.create(sandbox.Spec{})
	b := s.create(sandbox.Spec{})
	all, err := s.hv.List(s.ctx)
	require.NoError(t, err)
	names := make([]string, 0, len(all))
	for _, sb := range all {
		names = append(names, sb.Name)
		assert.True(t, strings.HasPrefix(sb.Name, sandbox.NamePrefix), "List returns sandboxes only: %s", sb.Name)
		assert.NotEmpty(t, sb.Owner, "%s has an owner", sb.Name)
	}
	assert.Contains(t, names, a.Name)
	assert.Contains(t, names, b.Name)
	require.NoError(t, s.hv.Destroy(s.ctx, a.Name))
	all, err = s.hv.List(s.ctx)
	require.NoError(t, err)
	for _, sb := range all {
		assert.NotEqual(t, a.Name, sb.Name, "destroyed sandbox still listed")
	}
}

func (s *suite) reconcile() {
	t := s.t
	rec, ok := s.hv.(sandbox.Reconciler)
	if !ok {
		t.Skip("driver has no Reconcile")
	}
	alive := s.create(sandbox.Spec{})
	dead := s.create(sandbox.Spec{})
	unsure := s.create(sandbox.Spec{})
	errUnsure := errors.New("temporal unreachable")
	destroyed, err := rec.Reconcile(s.ctx, func(owner string) (bool, error) {
		switch owner {
		case dead.Owner:
			return false, nil
		case unsure.Owner:
			return false, errUnsure
		}
		// Other sandboxes on a shared host belong to other tests: live.
		return true, nil
	})
	assert.ErrorIs(t, err, errUnsure, "an unanswered owner is reported")
	assert.Equal(t, []string{dead.Name}, destroyed)
	_, err = s.hv.Get(s.ctx, dead.Name)
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	s.noLeftovers(dead.Name)
	for _, keep := range []sandbox.Sandbox{alive, unsure} {
		_, err = s.hv.Get(s.ctx, keep.Name)
		assert.NoError(t, err, "%s must survive", keep.Name)
	}
}

func (s *suite) lifecycle() {
	t := s.t
	a := s.create(sandbox.Spec{Boot: sandbox.BootCold})
	id := Identity(t, a.Name)
	id.Files = append(id.Files, sandbox.GuestFile{Path: "/etc/airlock-test/secret", Mode: 0o600, Content: []byte("s3cret\n")})
	started, err := s.hv.Start(s.ctx, a.Name, id)
	require.NoError(t, err, "start")
	assert.Equal(t, "running", started.State)
	assert.Equal(t, a.IP, started.IP, "the reserved IP")
	assert.False(t, started.Restored, "BootCold never restores")

	c, err := s.hv.Capacity(s.ctx)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, c.Running, 1)

	gf, hasGuest := s.hv.(GuestFiles)
	if hasGuest {
		got, err := gf.ReadGuestFile(s.ctx, a.Name, "/etc/machine-id")
		require.NoError(t, err)
		assert.Equal(t, id.MachineID+"\n", string(got))
		got, err = gf.ReadGuestFile(s.ctx, a.Name, "/etc/airlock-test/secret")
		require.NoError(t, err)
		assert.Equal(t, "s3cret\n", string(got))
	}

	// A retried Start on a running sandbox succeeds and rewrites identity.
	again, err := s.hv.Start(s.ctx, a.Name, id)
	require.NoError(t, err, "start again")
	assert.Equal(t, started.IP, again.IP)

	// Egress: closed by default, opens and closes.
	if ec, ok := s.hv.(EgressChecker); ok {
		open, err := ec.EgressOpen(s.ctx, a.Name)
		require.NoError(t, err)
		assert.False(t, open, "egress is closed by default")
		require.NoError(t, s.hv.SetEgress(s.ctx, a.Name, true))
		open, _ = ec.EgressOpen(s.ctx, a.Name)
		assert.True(t, open)
		require.NoError(t, s.hv.SetEgress(s.ctx, a.Name, false))
		open, _ = ec.EgressOpen(s.ctx, a.Name)
		assert.False(t, open)
		require.NoError(t, s.hv.SetEgress(s.ctx, a.Name, true), "left open: Destroy must close it")
	}

	s.snapshots(a.Name, gf, hasGuest)

	require.NoError(t, s.hv.Stop(s.ctx, a.Name))
	got, err := s.hv.Get(s.ctx, a.Name)
	require.NoError(t, err)
	assert.Equal(t, "shutoff", got.State)
	require.NoError(t, s.hv.Stop(s.ctx, a.Name), "stopping a stopped sandbox")

	require.NoError(t, s.hv.Destroy(s.ctx, a.Name))
	s.noLeftovers(a.Name)
}

func (s *suite) snapshots(name string, gf GuestFiles, hasGuest bool) {
	t := s.t
	_, err := s.hv.CreateSnapshot(s.ctx, name, "../escape")
	assert.ErrorIs(t, err, sandbox.ErrBadInput, "bad snapshot name")
	err = s.hv.RestoreSnapshot(s.ctx, name, "never-taken")
	assert.ErrorIs(t, err, sandbox.ErrSnapshotAbsent)

	s1, err := s.hv.CreateSnapshot(s.ctx, name, "baseline")
	require.NoError(t, err, "snapshot")
	assert.Equal(t, "baseline", s1.Name)
	assert.False(t, s1.CreatedAt.IsZero())
	again, err := s.hv.CreateSnapshot(s.ctx, name, "baseline")
	require.NoError(t, err, "a retried snapshot returns the existing one")
	assert.Equal(t, s1, again)

	const marker = "/root/after-snapshot"
	if s.caps.RealGuest && hasGuest {
		require.NoError(t, gf.WriteGuestFile(s.ctx, name, marker, []byte("changed\n")))
		got, err := gf.ReadGuestFile(s.ctx, name, marker)
		require.NoError(t, err)
		require.Equal(t, "changed\n", string(got))
	}
	_, err = s.hv.CreateSnapshot(s.ctx, name, "second")
	require.NoError(t, err)
	list, err := s.hv.ListSnapshots(s.ctx, name)
	require.NoError(t, err)
	var names []string
	for _, sn := range list {
		names = append(names, sn.Name)
	}
	assert.Equal(t, []string{"baseline", "second"}, names)

	require.NoError(t, s.hv.RestoreSnapshot(s.ctx, name, "baseline"), "restore")
	got, err := s.hv.Get(s.ctx, name)
	require.NoError(t, err)
	assert.Equal(t, "running", got.State, "a snapshot taken running restores running")
	if s.caps.RealGuest && hasGuest {
		_, err := gf.ReadGuestFile(s.ctx, name, marker)
		assert.Error(t, err, "the file written after the snapshot is gone")
	}

	require.NoError(t, s.hv.DeleteSnapshot(s.ctx, name, "second"))
	require.NoError(t, s.hv.DeleteSnapshot(s.ctx, name, "second"), "deleting a deleted snapshot")
	assert.ErrorIs(t, s.hv.DeleteSnapshot(s.ctx, name, "bad/name"), sandbox.ErrBadInput)
	list, err = s.hv.ListSnapshots(s.ctx, name)
	require.NoError(t, err)
	assert.True(t, slices.ContainsFunc(list, func(sn sandbox.Snapshot) bool { return sn.Name == "baseline" }))
	assert.Len(t, list, 1)
}
