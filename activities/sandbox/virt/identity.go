package virt

import (
	"context"
	"crypto/rand"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// ActivatePath is the guest's activation helper: it takes the identity
// files as records on stdin (golden image contract, docs/ARCHITECTURE.md).
// EntropyPath names the record it mixes into the kernel's pool instead of
// writing it.
const (
	ActivatePath = "/usr/local/sbin/airlock-activate"
	EntropyPath  = "/run/airlock-entropy"
)

var (
	machineIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)
	hostnameRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// normalizeIdentity fills what the caller left out (hostname = sandbox
// name, a fresh machine-id, fresh entropy) and rejects malformed values.
func normalizeIdentity(name string, in *sandbox.Identity) (sandbox.Identity, error) {
	var id sandbox.Identity
	if in != nil {
		id = *in
		id.Files = append([]sandbox.GuestFile(nil), in.Files...)
	}
	if id.Hostname == "" {
		id.Hostname = name
	}
	if !hostnameRE.MatchString(id.Hostname) {
		return id, badInput("hostname %q", id.Hostname)
	}
	if id.MachineID == "" {
		id.MachineID = newMachineID()
	}
	if !machineIDRE.MatchString(id.MachineID) {
		return id, badInput("machine-id must be 32 lowercase hex characters")
	}
	if len(id.Entropy) == 0 {
		id.Entropy = make([]byte, 64)
		rand.Read(id.Entropy)
	}
	for _, f := range id.Files {
		if !strings.HasPrefix(f.Path, "/") || path.Clean(f.Path) != f.Path || f.Path == "/" || strings.ContainsAny(f.Path, "\n\x00") {
			return id, badInput("identity file path %q", f.Path)
		}
		if f.Mode&^0o7777 != 0 {
			return id, badInput("identity file %s: mode %o", f.Path, f.Mode)
		}
	}
	return id, nil
}

// activation is what the helper does besides writing files.
type activation struct {
	// SetClock sets the guest clock to the host's first: after a restore
	// it is in the past, and certificate checks would fail.
	SetClock bool
	// MAC, if set, becomes the guest NIC's address (a restored template's
	// NIC, whose link is still down).
	MAC string
}

// writeIdentity hands machine-id, hostname, the caller's files and the
// entropy seed to the guest's activation helper in one guest-exec (golden
// image contract: deploy/images/src/airlock-activate.c).
func (d *Driver) writeIdentity(ctx context.Context, dom *libvirt.Domain, id sandbox.Identity, act activation) error {
	files := []guestFile{
		{Path: "/etc/machine-id", Mode: 0o444, Content: []byte(id.MachineID + "\n")},
		{Path: "/etc/hostname", Mode: 0o644, Content: []byte(id.Hostname + "\n")},
	}
	for _, f := range id.Files {
		files = append(files, guestFile{Path: f.Path, Mode: f.Mode, Content: f.Content})
	}
	files = append(files, guestFile{Path: EntropyPath, Mode: 0o600, Content: id.Entropy})
	return d.activate(ctx, dom, files, act)
}

// activate runs the activation helper with files as its records.
func (d *Driver) activate(ctx context.Context, dom *libvirt.Domain, files []guestFile, act activation) error {
	for _, f := range files {
		if !strings.HasPrefix(f.Path, "/") || strings.ContainsAny(f.Path, "\n\x00") {
			return badInput("guest path %q", f.Path)
		}
	}
	var args []string
	if act.MAC != "" {
		args = append(args, "--mac", act.MAC)
	}
	if act.SetClock {
		now := time.Now()
		args = append(args, "--clock", fmt.Sprintf("%d.%09d", now.Unix(), now.Nanosecond()))
	}
	res, err := d.guestExec(ctx, dom, ActivatePath, args, installRecords(files))
	if err != nil {
		return fmt.Errorf("activate identity: %w", err)
	}
	if res.ExitCode != 0 || res.Signal != 0 {
		return fmt.Errorf("activate identity (%s): exit %d signal %d: %s", ActivatePath, res.ExitCode, res.Signal,
			strings.TrimSpace(string(res.Stderr)))
	}
	return nil
}

// runningSandbox looks up a running sandbox for out-of-band guest access.
func (d *Driver) runningSandbox(name string) (*libvirt.Domain, error) {
	conn, err := d.connect()
	if err != nil {
		return nil, err
	}
	dom, _, err := d.lookup(conn, name)
	if err != nil {
		return nil, err
	}
	if active, _ := dom.IsActive(); !active {
		dom.Free()
		return nil, fmt.Errorf("%s is not running", name)
	}
	return dom, nil
}

// GuestExec runs a program in a running sandbox through the guest agent
// (no SSH, no shell unless path is one). For tests and diagnostics; the
// agent's own commands go through activities/remote over SSH.
func (d *Driver) GuestExec(ctx context.Context, name, path string, args ...string) (ExecResult, error) {
	dom, err := d.runningSandbox(name)
	if err != nil {
		return ExecResult{}, err
	}
	defer dom.Free()
	return d.guestExec(ctx, dom, path, args, nil)
}

// ReadGuestFile returns a file's content from a running sandbox.
func (d *Driver) ReadGuestFile(ctx context.Context, name, path string) ([]byte, error) {
	res, err := d.GuestExec(ctx, name, "/bin/cat", "--", path)
	if err != nil {
		return nil, err
	}
	if res.ExitCode != 0 {
		return nil, fmt.Errorf("read %s: %s", path, strings.TrimSpace(string(res.Stderr)))
	}
	return res.Stdout, nil
}

// WriteGuestFile writes a file (mode 0644 if new) in a running sandbox.
func (d *Driver) WriteGuestFile(ctx context.Context, name, path string, content []byte) error {
	dom, err := d.runningSandbox(name)
	if err != nil {
		return err
	}
	defer dom.Free()
	res, err := d.installFiles(ctx, dom, []guestFile{{Path: path, Mode: 0o644, Content: content}})
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("write %s: exit %d: %s", path, res.ExitCode, strings.TrimSpace(string(res.Stderr)))
	}
	return nil
}
