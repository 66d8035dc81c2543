package virt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// Destroy removes the domain, its snapshots, its overlays (including
// external snapshot overlays), its DHCP reservation, its egress entry,
// its console log and a stale persistent XML. Destroying a sandbox that
// does not exist is not an error; a domain that is not a sandbox is
// refused.
func (d *Driver) Destroy(ctx context.Context, name string) error {
	if !validName(name) {
		return badInput("%q is not a sandbox name", name)
	}
	conn, err := d.connect()
	if err != nil {
		return err
	}
	d.alloc.Lock()
	defer d.alloc.Unlock()

	network := ""
	var disks []string
	t0 := time.Now()
	defer d.phase(name, "destroyed", t0)
	dom, err := conn.LookupDomainByName(name)
	switch {
	case err == nil:
		defer dom.Free()
		m, ok, err := readMeta(dom, false)
		if err != nil {
			return fmt.Errorf("destroy %s: %w", name, err)
		}
		if !ok || m.Role != "" {
			return badInput("%s is not an airlock sandbox", name)
		}
		network = m.Network
		if m.IP != "" {
			if err := d.cfg.Firewall.Close(ctx, m.IP); err != nil {
				return fmt.Errorf("destroy %s: close egress: %w", name, err)
			}
		}
		disks = domainDisks(dom)
		if active, _ := dom.IsActive(); active {
			if err := dom.Destroy(); err != nil && lvCode(err) != libvirt.ERR_OPERATION_INVALID {
				return fmt.Errorf("destroy %s: power off: %w", name, err)
			}
			d.phase(name, "powered off", t0)
		}
		if err := undefine(dom); err != nil {
			return fmt.Errorf("destroy %s: %w", name, err)
		}
		d.phase(name, "undefined", t0)
	case !isNoDomain(err):
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := d.sweep(ctx, conn, name, network, disks); err != nil {
		return fmt.Errorf("destroy %s: %w", name, err)
	}
	return nil
}

// domainDisks collects the disk files a domain used: live and persistent
// definitions and every snapshot's definition.
func domainDisks(dom *libvirt.Domain) []string {
	var out []string
	for _, f := range []libvirt.DomainXMLFlags{0, libvirt.DOMAIN_XML_INACTIVE} {
		if def, err := domainDef(dom, f); err == nil {
			out = append(out, diskPaths(def)...)
		}
	}
	if snaps, err := dom.ListAllSnapshots(0); err == nil {
		for _, s := range snaps {
			if x, err := s.GetXMLDesc(0); err == nil {
				var sd libvirtxml.DomainSnapshot
				if sd.Unmarshal(x) == nil {
					out = append(out, diskPaths(sd.Domain)...)
					if sd.Disks != nil {
						for _, disk := range sd.Disks.Disks {
							if disk.Source != nil && disk.Source.File != nil && disk.Source.File.File != "" {
								out = append(out, disk.Source.File.File)
							}
						}
					}
				}
			}
			s.Free()
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// undefine removes the definition with its snapshot, checkpoint, nvram and
// managed-save metadata (drivers that refuse some flags get the rest).
func undefine(dom *libvirt.Domain) error {
	all := libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
		libvirt.DOMAIN_UNDEFINE_NVRAM | libvirt.DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
	err := dom.UndefineFlags(all)
	if lvCode(err) == libvirt.ERR_INVALID_ARG {
		err = dom.UndefineFlags(libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
	}
	if err != nil && !isNoDomain(err) && lvCode(err) != libvirt.ERR_OPERATION_INVALID { // transient: gone with destroy
		return fmt.Errorf("undefine: %w", err)
	}
	return nil
}

// sweep removes everything that carries a sandbox's name once its domain
// is gone (or was never defined): overlays, DHCP reservations and their
// egress entries, files under the state dir, a stale persistent XML.
func (d *Driver) sweep(ctx context.Context, conn *libvirt.Connect, name, network string, disks []string) error {
	var errs []error
	if vols, err := d.volumesOf(conn, name, disks); err != nil {
		errs = append(errs, err)
	} else if err := d.deleteVolumes(conn, vols); err != nil {
		errs = append(errs, err)
	}
	nets := []string{d.cfg.Network}
	if network != "" && network != d.cfg.Network {
		nets = append(nets, network)
	}
	for _, n := range nets {
		ips, err := d.releaseIP(conn, n, name, "")
		if err != nil {
			errs = append(errs, err)
		}
		for _, ip := range ips {
			if err := d.cfg.Firewall.Close(ctx, ip); err != nil {
				errs = append(errs, fmt.Errorf("close egress %s: %w", ip, err))
			}
		}
	}
	for _, f := range d.files(name) {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return joinErrs(errs)
}

// files are the host files a sandbox may leave: console log, restore copy,
// and libvirt's persistent XML (removed only when the domain is gone).
func (d *Driver) files(name string) []string {
	out := []string{d.consoleLog(name), filepath.Join(d.cfg.StateDir, "run", name+".save")}
	if d.cfg.LibvirtConfigDir != "" {
		out = append(out, filepath.Join(d.cfg.LibvirtConfigDir, name+".xml"))
	}
	return out
}

// Leftovers lists what still exists of a sandbox: its domain, volumes,
// DHCP reservations, files, and any egress entry no sandbox holds. After
// Destroy it must be empty. The conformance suite calls it.
func (d *Driver) Leftovers(ctx context.Context, name string) ([]string, error) {
	conn, err := d.connect()
	if err != nil {
		return nil, err
	}
	var out []string
	if dom, err := conn.LookupDomainByName(name); err == nil {
		out = append(out, "domain "+name)
		dom.Free()
	} else if !isNoDomain(err) {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	vols, err := d.volumesOf(conn, name, nil)
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		out = append(out, "volume "+v)
	}
	res, err := d.reservations(conn, d.cfg.Network)
	if err != nil {
		return nil, err
	}
	for _, h := range res[name] {
		out = append(out, fmt.Sprintf("dhcp-host %s %s %s", h.Name, h.MAC, h.IP))
	}
	for _, f := range d.files(name) {
		if _, err := os.Stat(f); err == nil {
			if strings.HasSuffix(f, ".xml") {
				if _, err := conn.LookupDomainByName(name); err == nil {
					continue // the live domain's own definition
				}
			}
			out = append(out, "file "+f)
		}
	}
	stray, err := d.strayEgress(ctx, conn)
	if err != nil {
		return nil, err
	}
	for _, ip := range stray {
		out = append(out, "egress "+ip+" (no sandbox)")
	}
	return out, nil
}

// strayEgress lists open egress addresses that no sandbox holds.
func (d *Driver) strayEgress(ctx context.Context, conn *libvirt.Connect) ([]string, error) {
	open, err := d.cfg.Firewall.ListOpen(ctx)
	if err != nil || len(open) == 0 {
		return nil, err
	}
	sds, err := d.sandboxes(conn)
	if err != nil {
		return nil, err
	}
	held := map[string]bool{}
	for _, sd := range sds {
		held[sd.Meta.IP] = true
	}
	var out []string
	for _, ip := range open {
		if !held[ip] {
			out = append(out, ip)
		}
	}
	return out, nil
}

// Reconcile destroys sandboxes whose owner is not live, then sweeps debris
// (volumes and reservations named sbx-* without a domain, egress entries
// without a sandbox). Domains without the sbx- prefix and Airlock metadata
// are never touched; an error from live leaves that sandbox alone.
func (d *Driver) Reconcile(ctx context.Context, live func(owner string) (bool, error)) ([]string, error) {
	conn, err := d.connect()
	if err != nil {
		return nil, err
	}
	sds, err := d.sandboxes(conn)
	if err != nil {
		return nil, err
	}
	var destroyed []string
	var errs []error
	for _, sd := range sds {
		// A sandbox younger than ReconcileMinAge may belong to a workflow
		// another Temporal cluster or test is still starting: leave it.
		if created, err := time.Parse(time.RFC3339, sd.Meta.Created); err == nil && time.Since(created) < d.cfg.ReconcileMinAge {
			continue
		}
		ok, err := live(sd.Meta.Owner)
		if err != nil {
			errs = append(errs, fmt.Errorf("owner of %s: %w", sd.Name, err))
			continue
		}
		if ok {
			continue
		}
		if err := d.Destroy(ctx, sd.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		destroyed = append(destroyed, sd.Name)
	}

	d.alloc.Lock()
	defer d.alloc.Unlock()
	debris := map[string]bool{}
	vols, err := d.poolVolumeNames(conn)
	if err != nil {
		errs = append(errs, err)
	}
	for _, v := range vols {
		if strings.HasPrefix(v, sandbox.NamePrefix) {
			debris[strings.SplitN(v, ".", 2)[0]] = true
		}
	}
	res, err := d.reservations(conn, d.cfg.Network)
	if err != nil {
		errs = append(errs, err)
	}
	for n := range res {
		debris[n] = true
	}
	for n := range debris {
		dom, err := conn.LookupDomainByName(n)
		if err == nil {
			dom.Free()
			continue
		}
		if !isNoDomain(err) || !validName(n) {
			continue
		}
		if err := d.sweep(ctx, conn, n, "", nil); err != nil {
			errs = append(errs, err)
			continue
		}
		if !slices.Contains(destroyed, n) {
			destroyed = append(destroyed, n)
		}
	}
	stray, err := d.strayEgress(ctx, conn)
	if err != nil {
		errs = append(errs, err)
	}
	for _, ip := range stray {
		if err := d.cfg.Firewall.Close(ctx, ip); err != nil {
			errs = append(errs, err)
		}
	}
	slices.Sort(destroyed)
	if err := joinErrs(errs); err != nil {
		return destroyed, fmt.Errorf("reconcile: %w", err)
	}
	return destroyed, nil
}

// SetEgress opens or closes the sandbox's address in the egress set.
func (d *Driver) SetEgress(ctx context.Context, name string, open bool) error {
	conn, err := d.connect()
	if err != nil {
		return err
	}
	dom, m, err := d.lookup(conn, name)
	if err != nil {
		return err
	}
	dom.Free()
	if m.IP == "" {
		return fmt.Errorf("set egress %s: no address", name)
	}
	if open {
		err = d.cfg.Firewall.Open(ctx, m.IP)
	} else {
		err = d.cfg.Firewall.Close(ctx, m.IP)
	}
	if err != nil {
		return fmt.Errorf("set egress %s: %w", name, err)
	}
	return nil
}

// EgressOpen reports whether the sandbox's address is in the egress set.
func (d *Driver) EgressOpen(ctx context.Context, name string) (bool, error) {
	conn, err := d.connect()
	if err != nil {
		return false, err
	}
	dom, m, err := d.lookup(conn, name)
	if err != nil {
		return false, err
	}
	dom.Free()
	open, err := d.cfg.Firewall.ListOpen(ctx)
	if err != nil {
		return false, err
	}
	return slices.Contains(open, m.IP), nil
}
