package virt

import (
	"encoding/xml"
	"fmt"
	"strings"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// MetadataNS is the XML namespace of Airlock's <metadata> element.
const MetadataNS = "https://airlock.dev/xmlns/sandbox/1"

const metaPrefix = "airlock"

// meta is what Airlock keeps in a domain's <metadata>.
type meta struct {
	XMLName   xml.Name `xml:"sandbox"`
	Role      string   `xml:"role,omitempty"` // "" sandbox, "template"
	Owner     string   `xml:"owner"`
	Image     string   `xml:"image"`
	ImageHash string   `xml:"image-hash,omitempty"`
	Network   string   `xml:"network,omitempty"`
	MAC       string   `xml:"mac,omitempty"`
	IP        string   `xml:"ip,omitempty"`
	// Template is the template key whose memory image the first Start
	// restores; empty means cold boot.
	Template string `xml:"template,omitempty"`
	Started  bool   `xml:"started,omitempty"`  // the overlay has been booted or restored
	Restored bool   `xml:"restored,omitempty"` // the current run came from the template
	Created  string `xml:"created,omitempty"`  // RFC 3339
}

// inner is the element as SetMetadata wants it (libvirt adds the prefix).
func (m meta) inner() string {
	m.XMLName = xml.Name{Local: "sandbox"}
	b, err := xml.Marshal(m)
	if err != nil { // only strings and bools: cannot fail
		panic(err)
	}
	return string(b)
}

// element is the namespaced element for a <metadata> block in domain XML.
func (m meta) element() string {
	s := m.inner()
	s = strings.TrimPrefix(s, "<sandbox>")
	s = strings.TrimSuffix(s, "</sandbox>")
	return fmt.Sprintf(`<%s:sandbox xmlns:%s=%q>%s</%s:sandbox>`, metaPrefix, metaPrefix, MetadataNS, s, metaPrefix)
}

// readMeta returns the domain's Airlock metadata, ok=false if it has none.
// live picks the running definition instead of the persistent one.
func readMeta(dom *libvirt.Domain, live bool) (meta, bool, error) {
	flags := libvirt.DOMAIN_AFFECT_CONFIG
	if live {
		flags = libvirt.DOMAIN_AFFECT_LIVE
	}
	s, err := dom.GetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, MetadataNS, flags)
	if err != nil {
		if lvCode(err) == libvirt.ERR_NO_DOMAIN_METADATA {
			return meta{}, false, nil
		}
		return meta{}, false, fmt.Errorf("read metadata: %w", err)
	}
	var m meta
	if err := xml.Unmarshal([]byte(s), &m); err != nil {
		return meta{}, false, fmt.Errorf("parse metadata: %w", err)
	}
	return m, true, nil
}

// writeMeta stores m in the persistent definition and, if running, the live one.
func writeMeta(dom *libvirt.Domain, m meta) error {
	flags := libvirt.DOMAIN_AFFECT_CONFIG
	if active, _ := dom.IsActive(); active {
		flags |= libvirt.DOMAIN_AFFECT_LIVE
	}
	if err := dom.SetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, m.inner(), metaPrefix, MetadataNS, flags); err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	return nil
}

// domainSpec is everything one domain definition needs.
type domainSpec struct {
	Name, UUID       string
	MemoryMiB, VCPUs int
	Disk             string // overlay path
	Kernel, Initrd   string
	MAC, Network     string // empty MAC: no NIC
	LinkDown         bool   // the NIC's link starts down (templates)
	ConsoleLog       string
	Meta             meta
}

// domainXML renders the definition: direct kernel boot, virtio disk, agent
// channel, serial console into a log file, virtio-rng, optional NIC.
func (d *Driver) domainXML(s domainSpec) (string, error) {
	port := uint(0)
	dom := &libvirtxml.Domain{
		Type:     d.cfg.DomainType,
		Name:     s.Name,
		UUID:     s.UUID,
		Metadata: &libvirtxml.DomainMetadata{XML: s.Meta.element()},
		Memory:   &libvirtxml.DomainMemory{Value: uint(s.MemoryMiB), Unit: "MiB"},
		VCPU:     &libvirtxml.DomainVCPU{Value: uint(s.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type:    &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"},
			Kernel:  s.Kernel,
			Initrd:  s.Initrd,
			Cmdline: d.cfg.Cmdline,
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		Clock:      &libvirtxml.DomainClock{Offset: "utc"},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Disks: []libvirtxml.DomainDisk{{
				Device: "disk",
				Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2", Discard: "unmap"},
				Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.Disk}},
				Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
			}},
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: s.ConsoleLog}},
				Target: &libvirtxml.DomainSerialTarget{Port: &port},
			}},
			Channels: []libvirtxml.DomainChannel{{
				Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind"}},
				Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: "org.qemu.guest_agent.0"}},
			}},
			RNGs: []libvirtxml.DomainRNG{{
				Model:   "virtio",
				Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	switch d.cfg.DomainType {
	case "qemu":
		dom.Features.TCG = &libvirtxml.DomainFeatureTCG{
			TBCache: &libvirtxml.DomainFeatureTCGTBCache{Size: uint(d.cfg.TBCacheMiB), Unit: "MiB"},
		}
	case "kvm":
		dom.CPU = &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	if s.MAC != "" {
		iface := nicXML(s.MAC, s.Network)
		if s.LinkDown {
			iface.Link = &libvirtxml.DomainInterfaceLink{State: "down"}
		}
		dom.Devices.Interfaces = []libvirtxml.DomainInterface{iface}
	}
	out, err := dom.Marshal()
	if err != nil {
		return "", fmt.Errorf("domain xml: %w", err)
	}
	return out, nil
}

func nicXML(mac, network string) libvirtxml.DomainInterface {
	return libvirtxml.DomainInterface{
		MAC:    &libvirtxml.DomainInterfaceMAC{Address: mac},
		Source: &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: network}},
		Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
	}
}

// domainDef parses a domain's XML (flags as for GetXMLDesc).
func domainDef(dom *libvirt.Domain, flags libvirt.DomainXMLFlags) (*libvirtxml.Domain, error) {
	s, err := dom.GetXMLDesc(flags)
	if err != nil {
		return nil, fmt.Errorf("domain xml: %w", err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(s); err != nil {
		return nil, fmt.Errorf("parse domain xml: %w", err)
	}
	return &def, nil
}

// diskPaths lists the file-backed disk sources of a definition.
func diskPaths(def *libvirtxml.Domain) []string {
	var out []string
	if def == nil || def.Devices == nil {
		return nil
	}
	for _, disk := range def.Devices.Disks {
		if disk.Source != nil && disk.Source.File != nil && disk.Source.File.File != "" {
			out = append(out, disk.Source.File.File)
		}
	}
	return out
}

// findNIC returns the definition's interface with mac, or nil.
func findNIC(def *libvirtxml.Domain, mac string) *libvirtxml.DomainInterface {
	if def.Devices == nil {
		return nil
	}
	for i := range def.Devices.Interfaces {
		if n := &def.Devices.Interfaces[i]; n.MAC != nil && strings.EqualFold(n.MAC.Address, mac) {
			return n
		}
	}
	return nil
}

// toSandbox fills the public view of a domain.
func toSandbox(name string, dom *libvirt.Domain, m meta) sandbox.Sandbox {
	sb := sandbox.Sandbox{Name: name, Owner: m.Owner, Image: m.Image, MAC: m.MAC, IP: m.IP, Restored: m.Restored}
	if uuid, err := dom.GetUUIDString(); err == nil {
		sb.UUID = uuid
	}
	if st, _, err := dom.GetState(); err == nil {
		sb.State = stateName(st)
	}
	return sb
}
