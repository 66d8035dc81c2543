package virt

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// lookup finds a sandbox domain and its metadata (live definition when
// running). Missing, template and foreign domains are ErrNotFound.
func (d *Driver) lookup(conn *libvirt.Connect, name string) (*libvirt.Domain, meta, error) {
	if !validName(name) {
		return nil, meta{}, fmt.Errorf("%w: %q is not a sandbox name", sandbox.ErrNotFound, name)
	}
	dom, err := conn.LookupDomainByName(name)
	if err != nil {
		if isNoDomain(err) {
			return nil, meta{}, fmt.Errorf("%w: %s", sandbox.ErrNotFound, name)
		}
		return nil, meta{}, fmt.Errorf("look up %s: %w", name, err)
	}
	active, _ := dom.IsActive()
	m, ok, err := readMeta(dom, active)
	if err != nil || !ok || m.Role != "" {
		dom.Free()
		if err != nil {
			return nil, meta{}, err
		}
		return nil, meta{}, fmt.Errorf("%w: %s is not an airlock sandbox", sandbox.ErrNotFound, name)
	}
	return dom, m, nil
}

// Get returns one sandbox.
func (d *Driver) Get(ctx context.Context, name string) (sandbox.Sandbox, error) {
	conn, err := d.connect()
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	dom, m, err := d.lookup(conn, name)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	defer dom.Free()
	return toSandbox(name, dom, m), nil
}

// sandboxDomain is one domain that carries Airlock sandbox metadata.
type sandboxDomain struct {
	Name   string
	Meta   meta
	Active bool
	MemKiB uint64
}

// sandboxes lists domains with sandbox metadata and the sbx- prefix.
func (d *Driver) sandboxes(conn *libvirt.Connect) ([]sandboxDomain, error) {
	doms, err := conn.ListAllDomains(0)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	var out []sandboxDomain
	for _, dom := range doms {
		name, err := dom.GetName()
		if err == nil && validName(name) {
			active, _ := dom.IsActive()
			if m, ok, err := readMeta(&dom, active); err == nil && ok && m.Role == "" {
				sd := sandboxDomain{Name: name, Meta: m, Active: active}
				if info, err := dom.GetInfo(); err == nil {
					sd.MemKiB = info.MaxMem
				}
				out = append(out, sd)
			}
		}
		dom.Free()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// List returns every sandbox on this host.
func (d *Driver) List(ctx context.Context) ([]sandbox.Sandbox, error) {
	conn, err := d.connect()
	if err != nil {
		return nil, err
	}
	sds, err := d.sandboxes(conn)
	if err != nil {
		return nil, err
	}
	out := make([]sandbox.Sandbox, 0, len(sds))
	for _, sd := range sds {
		dom, err := conn.LookupDomainByName(sd.Name)
		if err != nil {
			continue // destroyed meanwhile
		}
		out = append(out, toSandbox(sd.Name, dom, sd.Meta))
		dom.Free()
	}
	return out, nil
}

// Capacity reports what a new sandbox can have. FreeMemoryMiB is the
// smaller of (available host memory - reserve - memory of defined but
// stopped sandboxes) and (total - reserve - memory of all sandboxes).
func (d *Driver) Capacity(ctx context.Context) (sandbox.Capacity, error) {
	conn, err := d.connect()
	if err != nil {
		return sandbox.Capacity{}, err
	}
	c, _, err := d.capacity(conn)
	return c, err
}

func (d *Driver) capacity(conn *libvirt.Connect) (sandbox.Capacity, int, error) {
	info, err := conn.GetNodeInfo()
	if err != nil {
		return sandbox.Capacity{}, 0, fmt.Errorf("node info: %w", err)
	}
	sds, err := d.sandboxes(conn)
	if err != nil {
		return sandbox.Capacity{}, 0, err
	}
	c := sandbox.Capacity{
		Host:           d.cfg.Host,
		TotalMemoryMiB: int64(info.Memory / 1024),
		VCPUs:          int(info.Cpus),
		MaxSandboxes:   d.cfg.MaxSandboxes,
	}
	var committed, pending int64
	for _, sd := range sds {
		committed += int64(sd.MemKiB / 1024)
		if sd.Active {
			c.Running++
		} else {
			pending += int64(sd.MemKiB / 1024)
		}
	}
	total, avail, err := hostMemoryMiB(conn, c.TotalMemoryMiB)
	if err != nil {
		return sandbox.Capacity{}, 0, err
	}
	c.TotalMemoryMiB = total
	c.FreeMemoryMiB = max(0, min(avail-pending, c.TotalMemoryMiB-committed)-d.cfg.ReserveMiB)
	return c, len(sds), nil
}

// hostMemoryMiB returns total and available (free + buffers + cached)
// host memory from the node's memory statistics (node info can report
// less than the host has). Drivers without them (the test driver) fall
// back to node info minus the memory of running domains.
func hostMemoryMiB(conn *libvirt.Connect, totalMiB int64) (int64, int64, error) {
	if st, err := conn.GetMemoryStats(libvirt.NODE_MEMORY_STATS_ALL_CELLS, 0); err == nil && st.FreeSet && st.TotalSet {
		return int64(st.Total / 1024), int64((st.Free + st.Buffers + st.Cached) / 1024), nil
	}
	if free, err := conn.GetFreeMemory(); err == nil && free > 0 {
		return totalMiB, int64(free >> 20), nil
	}
	doms, err := conn.ListAllDomains(libvirt.CONNECT_LIST_DOMAINS_ACTIVE)
	if err != nil {
		return 0, 0, fmt.Errorf("list domains: %w", err)
	}
	used := int64(0)
	for _, dom := range doms {
		if info, err := dom.GetInfo(); err == nil {
			used += int64(info.MaxMem / 1024)
		}
		dom.Free()
	}
	return totalMiB, totalMiB - used, nil
}

// Create defines a sandbox on a new overlay. It is idempotent for the
// same owner; on any error nothing is left behind.
func (d *Driver) Create(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	if strings.TrimSpace(spec.Owner) == "" {
		return sandbox.Sandbox{}, badInput("owner is empty")
	}
	name := spec.Name
	if name == "" {
		name = sandbox.NameFor(spec.Owner, "")
	}
	if !validName(name) {
		return sandbox.Sandbox{}, badInput("sandbox name %q (want sbx-[a-z0-9-], at most 63)", name)
	}
	mem, vcpus := spec.MemoryMiB, spec.VCPUs
	if mem == 0 {
		mem = d.cfg.MemoryMiB
	}
	if vcpus == 0 {
		vcpus = d.cfg.VCPUs
	}
	if mem < 128 || vcpus < 1 || vcpus > 64 {
		return sandbox.Sandbox{}, badInput("memory %d MiB, %d vCPUs", mem, vcpus)
	}
	network := spec.Network
	if network == "" {
		network = d.cfg.Network
	}
	img, err := d.resolveImage(spec.Image)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	if err := ctx.Err(); err != nil {
		return sandbox.Sandbox{}, err
	}
	conn, err := d.connect()
	if err != nil {
		return sandbox.Sandbox{}, err
	}

	d.alloc.Lock()
	defer d.alloc.Unlock()
	if dom, err := conn.LookupDomainByName(name); err == nil {
		defer dom.Free()
		active, _ := dom.IsActive()
		m, ok, err := readMeta(dom, active)
		if err != nil {
			return sandbox.Sandbox{}, err
		}
		if !ok || m.Role != "" || m.Owner != spec.Owner {
			return sandbox.Sandbox{}, fmt.Errorf("%w: %s", sandbox.ErrOwnedByOther, name)
		}
		return toSandbox(name, dom, m), nil
	} else if !isNoDomain(err) {
		return sandbox.Sandbox{}, fmt.Errorf("look up %s: %w", name, err)
	}
	// No domain: whatever carries this name is debris of a failed attempt.
	if err := d.sweep(ctx, conn, name, "", nil); err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("clear debris of %s: %w", name, err)
	}

	capNow, count, err := d.capacity(conn)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	if count >= d.cfg.MaxSandboxes {
		return sandbox.Sandbox{}, &sandbox.CapacityError{WantMiB: int64(mem), FreeMiB: capNow.FreeMemoryMiB,
			Reason: fmt.Sprintf("%d of %d sandboxes defined", count, d.cfg.MaxSandboxes)}
	}
	// Overcommit is a human's approved decision to start a sandbox on a
	// host short of memory; the sandbox-count limit still holds.
	if int64(mem) > capNow.FreeMemoryMiB && !spec.Overcommit {
		return sandbox.Sandbox{}, &sandbox.CapacityError{WantMiB: int64(mem), FreeMiB: capNow.FreeMemoryMiB}
	}

	backing, tmplKey := img.Disk, ""
	t, haveT := d.loadTemplate(templateKey(img))
	fits := haveT && t.MemoryMiB == mem && t.VCPUs == vcpus
	switch spec.Boot {
	case sandbox.BootCold:
	case sandbox.BootRestore:
		if !fits {
			return sandbox.Sandbox{}, fmt.Errorf("%w: image %s (%d MiB, %d vCPUs)", sandbox.ErrNoTemplate, img.Name, mem, vcpus)
		}
		backing, tmplKey = t.Disk, t.Key
	case sandbox.BootAuto:
		if fits {
			backing, tmplKey = t.Disk, t.Key
		}
	default:
		return sandbox.Sandbox{}, badInput("boot %q", spec.Boot)
	}

	m := meta{Owner: spec.Owner, Image: img.Name, ImageHash: img.Hash, Network: network, MAC: newMAC(),
		Template: tmplKey, Created: time.Now().UTC().Format(time.RFC3339)}
	created, err := d.define(ctx, conn, name, newUUID(), mem, vcpus, img, backing, m)
	if err != nil {
		if serr := d.sweep(context.WithoutCancel(ctx), conn, name, network, nil); serr != nil {
			err = fmt.Errorf("%w (cleanup: %v)", err, serr)
		}
		return sandbox.Sandbox{}, err
	}
	return created, nil
}

// define reserves the IP, makes the overlay and defines the domain.
func (d *Driver) define(ctx context.Context, conn *libvirt.Connect, name, uuid string, mem, vcpus int, img image, backing string, m meta) (sandbox.Sandbox, error) {
	t0 := time.Now()
	ip, err := d.reserveIP(conn, m.Network, name, m.MAC)
	if err != nil {
		var ce *sandbox.CapacityError
		if errors.As(err, &ce) {
			ce.WantMiB = int64(mem)
		}
		return sandbox.Sandbox{}, err
	}
	m.IP = ip
	d.phase(name, "reserved "+ip, t0)
	disk, err := d.createOverlay(conn, name+".qcow2", backing)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	d.phase(name, "overlay created", t0)
	xml, err := d.domainXML(domainSpec{
		Name: name, UUID: uuid, MemoryMiB: mem, VCPUs: vcpus, Disk: disk,
		Kernel: img.Kernel, Initrd: img.Initrd, MAC: m.MAC, Network: m.Network,
		ConsoleLog: d.consoleLog(name), Meta: m,
	})
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	dom, err := conn.DomainDefineXMLFlags(xml, libvirt.DOMAIN_DEFINE_VALIDATE)
	if err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("define %s: %w", name, err)
	}
	d.phase(name, "defined", t0)
	defer dom.Free()
	return toSandbox(name, dom, m), nil
}

// Start boots the sandbox, or restores the template's memory image onto
// its fresh overlay, then writes the identity and waits for the IP. On a
// running sandbox it (re)writes the identity only, so a retry is safe.
func (d *Driver) Start(ctx context.Context, name string, in *sandbox.Identity) (sandbox.Sandbox, error) {
	id, err := normalizeIdentity(name, in)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	conn, err := d.connect()
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	dom, m, err := d.lookup(conn, name)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	defer dom.Free()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.BootTimeout)
	defer cancel()

	st, _, err := dom.GetState()
	if err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("state of %s: %w", name, err)
	}
	t0 := time.Now()
	switch st {
	case libvirt.DOMAIN_RUNNING, libvirt.DOMAIN_BLOCKED:
	case libvirt.DOMAIN_PAUSED:
		if err := dom.Resume(); err != nil {
			return sandbox.Sandbox{}, fmt.Errorf("resume %s: %w", name, err)
		}
	default:
		t, haveT := d.loadTemplate(m.Template)
		m.Started, m.Restored = true, m.Template != "" && !m.Started && haveT
		if err := writeMeta(dom, m); err != nil {
			return sandbox.Sandbox{}, err
		}
		if m.Restored {
			err = d.restoreTemplate(ctx, conn, dom, name, m, t)
		} else if err = dom.Create(); err != nil {
			err = fmt.Errorf("boot %s: %w", name, err)
		}
		if err != nil {
			return sandbox.Sandbox{}, err
		}
		if m.Restored {
			d.phase(name, "restored", t0)
		} else {
			d.phase(name, "booting", t0)
		}
	}
	// A restored sandbox has the template's NIC, rewritten to its own MAC,
	// with the link down: activation sets the guest's MAC, then the link
	// comes up and DHCP sees this sandbox only. Templates from before that
	// layout have no NIC, and one is hot-plugged (slower: PCI probe, udev).
	var linkUp *libvirtxml.DomainInterface
	if m.Restored {
		def, err := domainDef(dom, 0)
		if err != nil {
			return sandbox.Sandbox{}, err
		}
		switch nic := findNIC(def, m.MAC); {
		case nic == nil:
			nic := nicXML(m.MAC, m.Network)
			x, err := nic.Marshal()
			if err != nil {
				return sandbox.Sandbox{}, fmt.Errorf("nic xml: %w", err)
			}
			if err := dom.AttachDeviceFlags(x, libvirt.DOMAIN_DEVICE_MODIFY_LIVE); err != nil {
				return sandbox.Sandbox{}, fmt.Errorf("hot-plug nic: %w", err)
			}
		case nic.Link != nil && nic.Link.State == "down":
			up := *nic
			up.Link = &libvirtxml.DomainInterfaceLink{State: "up"}
			linkUp = &up
		}
	}
	if err := d.waitAgent(ctx, dom); err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("start %s: %w", name, err)
	}
	d.phase(name, "agent answers", t0)
	act := activation{SetClock: m.Restored}
	if linkUp != nil {
		act.MAC = m.MAC
	}
	if err := d.writeIdentity(ctx, dom, id, act); err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("start %s: %w", name, err)
	}
	if linkUp != nil {
		x, err := linkUp.Marshal()
		if err != nil {
			return sandbox.Sandbox{}, fmt.Errorf("nic xml: %w", err)
		}
		if err := dom.UpdateDeviceFlags(x, libvirt.DOMAIN_DEVICE_MODIFY_LIVE); err != nil {
			return sandbox.Sandbox{}, fmt.Errorf("link up: %w", err)
		}
	}
	d.phase(name, "identity activated", t0)
	if err := d.waitIP(ctx, dom, m.MAC, m.IP); err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("start %s: %w", name, err)
	}
	d.phase(name, "guest has "+m.IP, t0)
	return toSandbox(name, dom, m), nil
}

// Stop shuts the guest down (agent, then ACPI) and powers it off if it
// has not stopped within StopTimeout. Stopping a stopped sandbox is fine.
func (d *Driver) Stop(ctx context.Context, name string) error {
	conn, err := d.connect()
	if err != nil {
		return err
	}
	dom, _, err := d.lookup(conn, name)
	if err != nil {
		return err
	}
	defer dom.Free()
	st, _, err := dom.GetState()
	if err != nil {
		return fmt.Errorf("state of %s: %w", name, err)
	}
	if st == libvirt.DOMAIN_SHUTOFF || st == libvirt.DOMAIN_CRASHED {
		return nil
	}
	if st == libvirt.DOMAIN_RUNNING || st == libvirt.DOMAIN_BLOCKED {
		err := dom.ShutdownFlags(libvirt.DOMAIN_SHUTDOWN_GUEST_AGENT | libvirt.DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
		if err != nil && lvCode(err) == libvirt.ERR_INVALID_ARG { // driver without shutdown modes
			err = dom.Shutdown()
		}
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, d.cfg.StopTimeout)
			var b backoff
			for {
				if active, _ := dom.IsActive(); !active {
					cancel()
					return nil
				}
				if b.wait(wctx) != nil {
					break
				}
			}
			cancel()
		}
	}
	if err := dom.Destroy(); err != nil && lvCode(err) != libvirt.ERR_OPERATION_INVALID {
		return fmt.Errorf("power off %s: %w", name, err)
	}
	return nil
}
