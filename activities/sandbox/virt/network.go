package virt

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// newMAC returns a random locally administered MAC in QEMU's 52:54:00 range.
func newMAC() string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newMachineID returns 32 lowercase hex characters.
func newMachineID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (d *Driver) network(conn *libvirt.Connect, name string) (*libvirt.Network, error) {
	n, err := conn.LookupNetworkByName(name)
	if err != nil {
		if lvCode(err) == libvirt.ERR_NO_NETWORK {
			return nil, badInput("network %q does not exist", name)
		}
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	return n, nil
}

// netDefs returns the live and the persistent definition of a network.
func netDefs(n *libvirt.Network) (live, config *libvirtxml.Network, err error) {
	parse := func(flags libvirt.NetworkXMLFlags) (*libvirtxml.Network, error) {
		s, err := n.GetXMLDesc(flags)
		if err != nil {
			return nil, fmt.Errorf("network xml: %w", err)
		}
		var def libvirtxml.Network
		if err := def.Unmarshal(s); err != nil {
			return nil, fmt.Errorf("parse network xml: %w", err)
		}
		return &def, nil
	}
	if live, err = parse(0); err != nil {
		return nil, nil, err
	}
	if persistent, _ := n.IsPersistent(); persistent {
		// The test driver cannot show the inactive XML: live stands for both.
		if config, err = parse(libvirt.NETWORK_XML_INACTIVE); err != nil && lvCode(err) != libvirt.ERR_INVALID_ARG {
			return nil, nil, err
		}
	}
	return live, config, nil
}

func dhcpOf(def *libvirtxml.Network) *libvirtxml.NetworkDHCP {
	if def == nil {
		return nil
	}
	for i := range def.IPs {
		if def.IPs[i].DHCP != nil && (def.IPs[i].Family == "" || def.IPs[i].Family == "ipv4") {
			return def.IPs[i].DHCP
		}
	}
	return nil
}

func updateFlags(n *libvirt.Network) libvirt.NetworkUpdateFlags {
	var f libvirt.NetworkUpdateFlags
	if active, _ := n.IsActive(); active {
		f |= libvirt.NETWORK_UPDATE_AFFECT_LIVE
	}
	if persistent, _ := n.IsPersistent(); persistent {
		f |= libvirt.NETWORK_UPDATE_AFFECT_CONFIG
	}
	return f
}

func hostXML(h libvirtxml.NetworkDHCPHost) string {
	h.Lease = nil
	s, err := h.Marshal()
	if err != nil { // attributes only: cannot fail
		panic(err)
	}
	return s
}

// reserveIP adds a DHCP reservation <host mac name ip/> on the lowest free
// address of the network's DHCP range, so the IP is known before boot.
func (d *Driver) reserveIP(conn *libvirt.Connect, network, name, mac string) (string, error) {
	n, err := d.network(conn, network)
	if err != nil {
		return "", err
	}
	defer n.Free()
	live, config, err := netDefs(n)
	if err != nil {
		return "", err
	}
	dhcp := dhcpOf(live)
	if dhcp == nil || len(dhcp.Ranges) == 0 {
		return "", fmt.Errorf("network %s has no DHCP range", network)
	}
	used := map[string]bool{}
	for _, def := range []*libvirtxml.Network{live, config} {
		if h := dhcpOf(def); h != nil {
			for _, host := range h.Hosts {
				used[host.IP] = true
			}
		}
	}
	if leases, err := n.GetDHCPLeases(); err == nil {
		for _, l := range leases {
			used[l.IPaddr] = true
		}
	}
	flags := updateFlags(n)
	for _, r := range dhcp.Ranges {
		start, err1 := netip.ParseAddr(r.Start)
		end, err2 := netip.ParseAddr(r.End)
		if err1 != nil || err2 != nil || !start.Is4() {
			continue
		}
		for ip := start; ip.Compare(end) <= 0; ip = ip.Next() {
			if used[ip.String()] {
				continue
			}
			h := libvirtxml.NetworkDHCPHost{MAC: mac, Name: name, IP: ip.String()}
			err := n.Update(libvirt.NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.NETWORK_SECTION_IP_DHCP_HOST, -1, hostXML(h), flags)
			if err == nil {
				return ip.String(), nil
			}
			if lvCode(err) != libvirt.ERR_OPERATION_INVALID { // not "already reserved"
				return "", fmt.Errorf("reserve %s: %w", ip, err)
			}
			used[ip.String()] = true
		}
	}
	return "", &sandbox.CapacityError{Reason: "no free address in network " + network}
}

// releaseIP removes every reservation on network named name or for mac.
// It returns the addresses that were reserved.
func (d *Driver) releaseIP(conn *libvirt.Connect, network, name, mac string) ([]string, error) {
	n, err := conn.LookupNetworkByName(network)
	if err != nil {
		if lvCode(err) == libvirt.ERR_NO_NETWORK {
			return nil, nil
		}
		return nil, fmt.Errorf("network %s: %w", network, err)
	}
	defer n.Free()
	live, config, err := netDefs(n)
	if err != nil {
		return nil, err
	}
	var ips []string
	var errs []error
	del := func(def *libvirtxml.Network, flag libvirt.NetworkUpdateFlags) {
		if def == nil || dhcpOf(def) == nil {
			return
		}
		for _, h := range dhcpOf(def).Hosts {
			if !(h.Name == name || (mac != "" && strings.EqualFold(h.MAC, mac))) {
				continue
			}
			if err := n.Update(libvirt.NETWORK_UPDATE_COMMAND_DELETE, libvirt.NETWORK_SECTION_IP_DHCP_HOST, -1, hostXML(h), flag); err != nil {
				errs = append(errs, fmt.Errorf("release %s: %w", h.IP, err))
				continue
			}
			ips = append(ips, h.IP)
		}
	}
	if config == nil {
		del(live, updateFlags(n))
	} else {
		if active, _ := n.IsActive(); active {
			del(live, libvirt.NETWORK_UPDATE_AFFECT_LIVE)
		}
		del(config, libvirt.NETWORK_UPDATE_AFFECT_CONFIG)
	}
	return ips, joinErrs(errs)
}

// reservations lists the DHCP host entries of a network whose name has
// the sandbox prefix, keyed by name.
func (d *Driver) reservations(conn *libvirt.Connect, network string) (map[string][]libvirtxml.NetworkDHCPHost, error) {
	n, err := conn.LookupNetworkByName(network)
	if err != nil {
		if lvCode(err) == libvirt.ERR_NO_NETWORK {
			return nil, nil
		}
		return nil, fmt.Errorf("network %s: %w", network, err)
	}
	defer n.Free()
	live, config, err := netDefs(n)
	if err != nil {
		return nil, err
	}
	out := map[string][]libvirtxml.NetworkDHCPHost{}
	seen := map[string]bool{}
	for _, def := range []*libvirtxml.Network{live, config} {
		if dhcpOf(def) == nil {
			continue
		}
		for _, h := range dhcpOf(def).Hosts {
			key := h.Name + "|" + h.MAC + "|" + h.IP
			if strings.HasPrefix(h.Name, sandbox.NamePrefix) && !seen[key] {
				seen[key] = true
				out[h.Name] = append(out[h.Name], h)
			}
		}
	}
	return out, nil
}
