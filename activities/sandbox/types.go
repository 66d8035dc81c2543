// Package sandbox defines the hypervisor seam: the Hypervisor interface that
// every host driver implements, the values that cross it, and the Temporal
// activities (activities.go) that the hypervisor worker registers on its
// host queue. This package is pure Go; the libvirt driver lives in
// activities/sandbox/virt so that workflow code never links cgo.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// QueuePrefix + host name is the task queue a hypervisor worker serves.
const QueuePrefix = "airlock.hv."

// Queue returns the task queue of the hypervisor worker on host.
func Queue(host string) string { return QueuePrefix + host }

// Spec asks for one sandbox. Name is derived from Owner by NameFor, so a
// retried Create finds the VM it made the first time.
type Spec struct {
	Name      string         `json:"name"`
	Owner     string         `json:"owner"` // workflow ID that owns the VM
	Image     string         `json:"image"` // golden image name, e.g. "bookworm"
	MemoryMiB int            `json:"memory_mib,omitempty"`
	VCPUs     int            `json:"vcpus,omitempty"`
	Network   string         `json:"network,omitempty"` // libvirt network; default the sandbox network
	Identity  *Identity      `json:"-"`                 // never serialised: holds a private key
	Boot      BootPreference `json:"boot,omitempty"`
	// Overcommit starts the sandbox even if the host is short of memory:
	// set only after a human approved it.
	Overcommit bool `json:"overcommit,omitempty"`
}

// BootPreference selects how a sandbox starts.
type BootPreference string

const (
	BootAuto    BootPreference = ""        // restore the host's template if present, else cold boot
	BootCold    BootPreference = "cold"    // always cold boot
	BootRestore BootPreference = "restore" // require the template; error if missing
)

// Identity is what makes a clone itself: written into the guest over the
// QEMU guest agent before anyone logs in.
type Identity struct {
	Hostname  string
	MachineID string      // 32 lowercase hex chars
	Files     []GuestFile // host key, host cert, user CA, principals
	Entropy   []byte      // fresh random bytes mixed into the guest's pool
}

// GuestFile is one file written into the guest by the guest agent.
type GuestFile struct {
	Path    string
	Mode    uint32
	Content []byte
}

// Sandbox is a VM as the hypervisor sees it.
type Sandbox struct {
	Name     string `json:"name"`
	Owner    string `json:"owner"`
	Image    string `json:"image"`
	UUID     string `json:"uuid"`
	MAC      string `json:"mac"`
	IP       string `json:"ip"`
	State    string `json:"state"`    // running, shutoff, paused, ...
	Restored bool   `json:"restored"` // started from the template's memory image
}

// Snapshot is one named point a sandbox can go back to.
type Snapshot struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Capacity is what a host has left.
type Capacity struct {
	Host           string `json:"host"`
	FreeMemoryMiB  int64  `json:"free_memory_mib"`
	TotalMemoryMiB int64  `json:"total_memory_mib"`
	VCPUs          int    `json:"vcpus"`
	Running        int    `json:"running"` // running sandboxes
	MaxSandboxes   int    `json:"max_sandboxes"`
}

// Hypervisor is the seam every host driver implements. All methods are
// idempotent where the name says so; errors are typed (see below).
type Hypervisor interface {
	Capacity(ctx context.Context) (Capacity, error)
	// Create defines the domain on a linked overlay of the read-only base.
	// Idempotent for the same Owner; ErrOwnedByOther otherwise.
	Create(ctx context.Context, spec Spec) (Sandbox, error)
	// Start boots (or restores the template onto) a created sandbox, writes
	// spec.Identity through the guest agent and returns once it has an IP.
	Start(ctx context.Context, name string, id *Identity) (Sandbox, error)
	Stop(ctx context.Context, name string) error
	// Destroy removes domain, snapshots, disks and DHCP reservation.
	// Destroying a missing sandbox is not an error.
	Destroy(ctx context.Context, name string) error
	Get(ctx context.Context, name string) (Sandbox, error)
	List(ctx context.Context) ([]Sandbox, error)

	CreateSnapshot(ctx context.Context, name, snapshot string) (Snapshot, error)
	ListSnapshots(ctx context.Context, name string) ([]Snapshot, error)
	RestoreSnapshot(ctx context.Context, name, snapshot string) error
	DeleteSnapshot(ctx context.Context, name, snapshot string) error

	// SetEgress opens or closes the sandbox's route out of the isolated
	// network. Closed is the default.
	SetEgress(ctx context.Context, name string, open bool) error
}

// Reconciler is implemented by drivers that can sweep sandboxes no live
// workflow owns. live reports whether the owner workflow is still running;
// an error from it leaves that sandbox alone. Reconcile returns the names
// it destroyed and never touches domains that are not sandboxes.
type Reconciler interface {
	Reconcile(ctx context.Context, live func(owner string) (bool, error)) ([]string, error)
}

// Typed errors. Activities turn ErrBadInput-wrapping errors into
// non-retryable application errors.
var (
	ErrBadInput       = errors.New("bad input")
	ErrNotFound       = errors.New("sandbox not found")
	ErrUnknownImage   = fmt.Errorf("%w: unknown source image", ErrBadInput)
	ErrOwnedByOther   = fmt.Errorf("%w: sandbox owned by another task", ErrBadInput)
	ErrNoCapacity     = errors.New("not enough capacity")
	ErrSnapshotAbsent = fmt.Errorf("%w: no such snapshot", ErrBadInput)
	// ErrNoTemplate: Spec.Boot is BootRestore but the host has no usable
	// template memory image for the image (or its size does not match).
	ErrNoTemplate = errors.New("no template memory image for fast start")
)

// CapacityError says how much was asked and what was free; the workflow
// turns it into an overcommit approval request.
type CapacityError struct {
	WantMiB, FreeMiB int64
	Reason           string // optional detail, e.g. "8 of 8 sandboxes in use"
}

func (e *CapacityError) Error() string {
	msg := fmt.Sprintf("not enough capacity: want %d MiB, %d MiB free", e.WantMiB, e.FreeMiB)
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	return msg
}

func (e *CapacityError) Unwrap() error { return ErrNoCapacity }
