package virt

import (
	"context"
	"fmt"
	"strings"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// roleProduction marks a long-lived VM that stands in for a production
// host (the demo's prod-web-1). It is never listed, reconciled or
// destroyed as a sandbox.
const roleProduction = "production"

// ProductionSpec describes such a VM. Its MAC has a static DHCP
// reservation on Network, so its address is known in advance.
type ProductionSpec struct {
	Name, Image, Network, MAC, IP string
	MemoryMiB                     int
	// Identity is written on first boot only; later boots keep the host
	// key the inventory has pinned.
	Identity *sandbox.Identity
}

// EnsureProduction boots the production VM, defining it on a new overlay
// of the golden image the first time. It is idempotent: a running VM is
// returned as it is, a stopped one is started again.
func (d *Driver) EnsureProduction(ctx context.Context, s ProductionSpec) (sandbox.Sandbox, error) {
	if s.Name == "" || strings.HasPrefix(s.Name, sandbox.NamePrefix) || s.MAC == "" || s.IP == "" || s.Network == "" {
		return sandbox.Sandbox{}, badInput("production VM needs a non-sandbox name, network, MAC and IP")
	}
	conn, err := d.connect()
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.BootTimeout)
	defer cancel()
	dom, err := conn.LookupDomainByName(s.Name)
	fresh := false
	var m meta
	switch {
	case err == nil:
		var ok bool
		m, ok, err = readMeta(dom, false)
		if err != nil {
			dom.Free()
			return sandbox.Sandbox{}, err
		}
		if !ok || m.Role != roleProduction {
			dom.Free()
			return sandbox.Sandbox{}, badInput("domain %s exists and is not an Airlock production VM", s.Name)
		}
	case lvCode(err) == libvirt.ERR_NO_DOMAIN:
		if dom, m, err = d.defineProduction(conn, s); err != nil {
			return sandbox.Sandbox{}, err
		}
		fresh = true
	default:
		return sandbox.Sandbox{}, fmt.Errorf("look up %s: %w", s.Name, err)
	}
	defer dom.Free()
	if active, _ := dom.IsActive(); !active {
		if err := dom.Create(); err != nil {
			return sandbox.Sandbox{}, fmt.Errorf("boot %s: %w", s.Name, err)
		}
	}
	if err := d.waitAgent(ctx, dom); err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("start %s: %w", s.Name, err)
	}
	if fresh {
		id, err := normalizeIdentity(s.Name, s.Identity)
		if err != nil {
			return sandbox.Sandbox{}, err
		}
		if err := d.writeIdentity(ctx, dom, id, activation{}); err != nil {
			return sandbox.Sandbox{}, fmt.Errorf("identity of %s: %w", s.Name, err)
		}
	}
	// The golden image leaves sshd off until a sandbox is activated. A
	// production host keeps it enabled, so that it answers after a reboot
	// of the VM or of the hypervisor host, as any server would; for a VM
	// defined before that rule, this also starts sshd now.
	res, err := d.guestExec(ctx, dom, "/bin/systemctl", []string{"enable", "--now", "ssh.service"}, nil)
	if err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("enable sshd on %s: %w", s.Name, err)
	}
	if res.ExitCode != 0 || res.Signal != 0 {
		return sandbox.Sandbox{}, fmt.Errorf("enable sshd on %s: exit %d signal %d: %s", s.Name, res.ExitCode, res.Signal, strings.TrimSpace(string(res.Stderr)))
	}
	if err := d.waitIP(ctx, dom, m.MAC, m.IP); err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("start %s: %w", s.Name, err)
	}
	sb := toSandbox(s.Name, dom, m)
	sb.Owner = ""
	return sb, nil
}

func (d *Driver) defineProduction(conn *libvirt.Connect, s ProductionSpec) (*libvirt.Domain, meta, error) {
	img, err := d.resolveImage(s.Image)
	if err != nil {
		return nil, meta{}, err
	}
	mem := s.MemoryMiB
	if mem == 0 {
		mem = d.cfg.MemoryMiB
	}
	m := meta{Role: roleProduction, Owner: "airlock-production", Image: img.Name, ImageHash: img.Hash,
		Network: s.Network, MAC: strings.ToLower(s.MAC), IP: s.IP, Created: time.Now().UTC().Format(time.RFC3339)}
	disk, err := d.createOverlay(conn, s.Name+".qcow2", img.Disk)
	if err != nil {
		return nil, meta{}, err
	}
	xml, err := d.domainXML(domainSpec{Name: s.Name, UUID: newUUID(), MemoryMiB: mem, VCPUs: 1, Disk: disk,
		Kernel: img.Kernel, Initrd: img.Initrd, MAC: m.MAC, Network: m.Network, ConsoleLog: d.consoleLog(s.Name), Meta: m})
	if err != nil {
		return nil, meta{}, err
	}
	dom, err := conn.DomainDefineXMLFlags(xml, libvirt.DOMAIN_DEFINE_VALIDATE)
	if err != nil {
		_ = d.deleteVolumes(conn, []string{disk})
		return nil, meta{}, fmt.Errorf("define %s: %w", s.Name, err)
	}
	return dom, m, nil
}

// DestroyProduction powers off and removes a production VM and its disk.
func (d *Driver) DestroyProduction(ctx context.Context, name string) error {
	conn, err := d.connect()
	if err != nil {
		return err
	}
	dom, err := conn.LookupDomainByName(name)
	if lvCode(err) == libvirt.ERR_NO_DOMAIN {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	defer dom.Free()
	m, ok, err := readMeta(dom, false)
	if err != nil {
		return err
	}
	if !ok || m.Role != roleProduction {
		return badInput("%s is not an Airlock production VM", name)
	}
	disks := domainDisks(dom)
	if active, _ := dom.IsActive(); active {
		if err := dom.Destroy(); err != nil {
			return fmt.Errorf("power off %s: %w", name, err)
		}
	}
	if err := dom.UndefineFlags(libvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.DOMAIN_UNDEFINE_NVRAM); err != nil {
		return fmt.Errorf("undefine %s: %w", name, err)
	}
	return d.deleteVolumes(conn, disks)
}
