package virt

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

var snapshotNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkSnapshotName(s string) error {
	if !snapshotNameRE.MatchString(s) {
		return badInput("snapshot name %q (want [A-Za-z0-9][A-Za-z0-9._-], at most 64)", s)
	}
	return nil
}

func snapshotOf(s *libvirt.DomainSnapshot) (sandbox.Snapshot, error) {
	x, err := s.GetXMLDesc(0)
	if err != nil {
		return sandbox.Snapshot{}, fmt.Errorf("snapshot xml: %w", err)
	}
	var sd libvirtxml.DomainSnapshot
	if err := sd.Unmarshal(x); err != nil {
		return sandbox.Snapshot{}, fmt.Errorf("parse snapshot xml: %w", err)
	}
	out := sandbox.Snapshot{Name: sd.Name}
	if secs, err := strconv.ParseInt(sd.CreationTime, 10, 64); err == nil {
		out.CreatedAt = time.Unix(secs, 0).UTC()
	}
	return out, nil
}

// CreateSnapshot takes an internal snapshot; on a running sandbox it holds
// memory too (DESIGN §9: the form libvirt 9 can revert while running).
// Creating a snapshot that exists returns it, so a retry is safe.
func (d *Driver) CreateSnapshot(ctx context.Context, name, snapshot string) (sandbox.Snapshot, error) {
	if err := checkSnapshotName(snapshot); err != nil {
		return sandbox.Snapshot{}, err
	}
	conn, err := d.connect()
	if err != nil {
		return sandbox.Snapshot{}, err
	}
	dom, _, err := d.lookup(conn, name)
	if err != nil {
		return sandbox.Snapshot{}, err
	}
	defer dom.Free()
	if s, err := dom.SnapshotLookupByName(snapshot, 0); err == nil {
		defer s.Free()
		return snapshotOf(s)
	}
	x, err := (&libvirtxml.DomainSnapshot{Name: snapshot, Description: "airlock"}).Marshal()
	if err != nil {
		return sandbox.Snapshot{}, fmt.Errorf("snapshot xml: %w", err)
	}
	t0 := time.Now()
	s, err := dom.CreateSnapshotXML(x, 0)
	if err != nil {
		return sandbox.Snapshot{}, fmt.Errorf("snapshot %s of %s: %w", snapshot, name, err)
	}
	defer s.Free()
	d.phase(name, "snapshot "+snapshot+" taken", t0)
	return snapshotOf(s)
}

// ListSnapshots returns the sandbox's snapshots, oldest first.
func (d *Driver) ListSnapshots(ctx context.Context, name string) ([]sandbox.Snapshot, error) {
	conn, err := d.connect()
	if err != nil {
		return nil, err
	}
	dom, _, err := d.lookup(conn, name)
	if err != nil {
		return nil, err
	}
	defer dom.Free()
	snaps, err := dom.ListAllSnapshots(0)
	if err != nil {
		return nil, fmt.Errorf("list snapshots of %s: %w", name, err)
	}
	out := make([]sandbox.Snapshot, 0, len(snaps))
	var firstErr error
	for i := range snaps {
		sn, err := snapshotOf(&snaps[i])
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if err == nil {
			out = append(out, sn)
		}
		snaps[i].Free()
	}
	if firstErr != nil {
		return nil, firstErr
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func lookupSnapshot(dom *libvirt.Domain, name, snapshot string) (*libvirt.DomainSnapshot, error) {
	if err := checkSnapshotName(snapshot); err != nil {
		return nil, err
	}
	s, err := dom.SnapshotLookupByName(snapshot, 0)
	if err != nil {
		if lvCode(err) == libvirt.ERR_NO_DOMAIN_SNAPSHOT {
			return nil, fmt.Errorf("%w: %s of %s", sandbox.ErrSnapshotAbsent, snapshot, name)
		}
		return nil, fmt.Errorf("snapshot %s of %s: %w", snapshot, name, err)
	}
	return s, nil
}

// RestoreSnapshot reverts the sandbox to the snapshot (disk and, if it
// was taken running, memory) and syncs the guest clock afterwards. The
// guest's TCP state is in the past: SSH connections must be re-dialled.
func (d *Driver) RestoreSnapshot(ctx context.Context, name, snapshot string) error {
	conn, err := d.connect()
	if err != nil {
		return err
	}
	dom, _, err := d.lookup(conn, name)
	if err != nil {
		return err
	}
	defer dom.Free()
	s, err := lookupSnapshot(dom, name, snapshot)
	if err != nil {
		return err
	}
	defer s.Free()
	t0 := time.Now()
	if err := s.RevertToSnapshot(0); err != nil {
		return fmt.Errorf("revert %s to %s: %w", name, snapshot, err)
	}
	d.phase(name, "reverted to "+snapshot, t0)
	if active, _ := dom.IsActive(); !active {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.BootTimeout)
	defer cancel()
	if err := d.waitAgent(ctx, dom); err != nil {
		return fmt.Errorf("revert %s: %w", name, err)
	}
	if err := d.syncClock(ctx, dom); err != nil {
		return fmt.Errorf("revert %s: %w", name, err)
	}
	d.phase(name, "clock synced after revert", t0)
	return nil
}

// DeleteSnapshot removes a snapshot. Deleting a missing snapshot is not
// an error (a retried delete must not fail); a bad name is.
func (d *Driver) DeleteSnapshot(ctx context.Context, name, snapshot string) error {
	conn, err := d.connect()
	if err != nil {
		return err
	}
	dom, _, err := d.lookup(conn, name)
	if err != nil {
		return err
	}
	defer dom.Free()
	s, err := lookupSnapshot(dom, name, snapshot)
	if err != nil {
		if errors.Is(err, sandbox.ErrSnapshotAbsent) {
			return nil
		}
		return err
	}
	defer s.Free()
	if err := s.Delete(0); err != nil && lvCode(err) != libvirt.ERR_NO_DOMAIN_SNAPSHOT {
		return fmt.Errorf("delete snapshot %s of %s: %w", snapshot, name, err)
	}
	return nil
}
