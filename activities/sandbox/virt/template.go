package virt

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Template is a pre-booted guest's memory image plus the disk it ran on.
// Sandboxes restored from it get an overlay backed by Disk, which is never
// written again once the image is saved.
type Template struct {
	Key        string        `json:"key"` // <image>-<imagehash>
	Image      string        `json:"image"`
	ImageHash  string        `json:"image_hash"`
	SaveFile   string        `json:"save_file"` // $STATE/templates/<key>.save
	Disk       string        `json:"disk"`      // pool volume tmpl-<key>.qcow2
	MemoryMiB  int           `json:"memory_mib"`
	VCPUs      int           `json:"vcpus"`
	DomainType string        `json:"domain_type"`
	SystemdSay string        `json:"systemd_state"` // what is-system-running said
	Created    time.Time     `json:"created"`
	BootTime   time.Duration `json:"boot_time"` // boot to systemd settled
	SaveTime   time.Duration `json:"save_time"`
}

func (d *Driver) templatePath(key, ext string) string {
	return filepath.Join(d.cfg.StateDir, "templates", key+ext)
}

// loadTemplate reads a finished template's sidecar; ok=false if there is
// no complete template for key.
func (d *Driver) loadTemplate(key string) (Template, bool) {
	if key == "" {
		return Template{}, false
	}
	b, err := os.ReadFile(d.templatePath(key, ".json"))
	if err != nil {
		return Template{}, false
	}
	var t Template
	if json.Unmarshal(b, &t) != nil || t.Key != key || t.DomainType != d.cfg.DomainType {
		return Template{}, false
	}
	// The template's disk is backed by its image's base: if that hash
	// directory was removed, the template is unusable.
	base := filepath.Join(d.cfg.ImageCache, t.Image, t.ImageHash, "disk.qcow2")
	for _, f := range []string{t.SaveFile, t.Disk, base} {
		if _, err := os.Stat(f); err != nil {
			return Template{}, false
		}
	}
	return t, true
}

// TemplateFor returns the image's finished template, if this host has one.
func (d *Driver) TemplateFor(image string) (Template, bool) {
	img, err := d.resolveImage(image)
	if err != nil {
		return Template{}, false
	}
	return d.loadTemplate(templateKey(img))
}

// EnsureTemplate makes sure the host has a template for image: it boots
// the golden image with a NIC whose link is down, waits until systemd has
// settled (asked through the guest agent), starts sshd on a throw-away key
// and saves the memory state. Once per image
// hash per host; later calls return the existing one.
func (d *Driver) EnsureTemplate(ctx context.Context, image string) (Template, error) {
	img, err := d.resolveImage(image)
	if err != nil {
		return Template{}, err
	}
	key := templateKey(img)
	d.tmpl.Lock()
	defer d.tmpl.Unlock()
	unlock, err := lockFile(d.templatePath(key, ".lock"))
	if err != nil {
		return Template{}, err
	}
	defer unlock()
	if t, ok := d.loadTemplate(key); ok {
		d.refillSpare(t)
		return t, nil
	}
	conn, err := d.connect()
	if err != nil {
		return Template{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.BootTimeout)
	defer cancel()
	t, err := d.buildTemplate(ctx, conn, img, key)
	if err != nil {
		return Template{}, fmt.Errorf("template %s: %w", key, err)
	}
	if err := d.pruneTemplates(conn, img.Name, key); err != nil {
		return t, fmt.Errorf("template %s built; pruning old ones: %w", key, err)
	}
	return t, nil
}

// pruneTemplates removes the image's other templates (older image hashes)
// whose disk no sandbox's overlay is backed by.
func (d *Driver) pruneTemplates(conn *libvirt.Connect, image, keep string) error {
	sds, err := d.sandboxes(conn)
	if err != nil {
		return err
	}
	used := map[string]bool{keep: true}
	for _, sd := range sds {
		used[sd.Meta.Template] = true
	}
	sides, _ := filepath.Glob(d.templatePath(image+"-*", ".json"))
	var errs []error
	for _, side := range sides {
		var t Template
		b, err := os.ReadFile(side)
		if err != nil || json.Unmarshal(b, &t) != nil || t.Image != image || used[t.Key] {
			continue
		}
		unlock, err := lockFile(d.templatePath(t.Key, ".lock"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Sidecar first: without it nobody picks the template up.
		for _, f := range []string{side, t.SaveFile, d.sparePath(t)} {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
		if err := d.deleteVolumes(conn, []string{t.Disk}); err != nil {
			errs = append(errs, err)
		}
		os.Remove(d.templatePath(t.Key, ".lock"))
		os.Remove(d.consoleLog("tmpl-" + t.Key))
		unlock()
	}
	return joinErrs(errs)
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("template lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("template lock: %w", err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

func (d *Driver) buildTemplate(ctx context.Context, conn *libvirt.Connect, img image, key string) (Template, error) {
	domName := "tmpl-" + key
	volName := "tmpl-" + key + ".qcow2"
	part := d.templatePath(key, ".save.part")
	// Debris of an interrupted build: no sidecar means no sandbox uses it.
	if dom, err := conn.LookupDomainByName(domName); err == nil {
		dom.Destroy()
		dom.Undefine()
		dom.Free()
	}
	if vols, err := d.volumesOf(conn, "tmpl-"+key, nil); err == nil {
		d.deleteVolumes(conn, vols)
	}
	os.Remove(part)

	ok := false
	disk, err := d.createOverlay(conn, volName, img.Disk)
	if err != nil {
		return Template{}, err
	}
	defer func() {
		if !ok {
			if dom, err := conn.LookupDomainByName(domName); err == nil {
				dom.Destroy()
				dom.Free()
			}
			d.deleteVolumes(conn, []string{disk})
			os.Remove(part)
		}
	}()
	xml, err := d.domainXML(domainSpec{
		Name: domName, UUID: newUUID(), MemoryMiB: d.cfg.MemoryMiB, VCPUs: d.cfg.VCPUs,
		Disk: disk, Kernel: img.Kernel, Initrd: img.Initrd,
		MAC: templateMAC, Network: d.cfg.Network, LinkDown: true,
		ConsoleLog: d.consoleLog(domName),
		Meta:       meta{Role: "template", Image: img.Name, ImageHash: img.Hash},
	})
	if err != nil {
		return Template{}, err
	}
	t0 := time.Now()
	dom, err := conn.DomainCreateXML(xml, 0) // transient: gone once saved
	if err != nil {
		return Template{}, fmt.Errorf("boot: %w", err)
	}
	defer dom.Free()
	if err := d.waitAgent(ctx, dom); err != nil {
		return Template{}, err
	}
	res, err := d.guestExec(ctx, dom, "/bin/systemctl", []string{"is-system-running", "--wait"}, nil)
	if err != nil {
		return Template{}, fmt.Errorf("wait for systemd: %w", err)
	}
	say := strings.TrimSpace(string(res.Stdout))
	if say != "running" && say != "degraded" {
		return Template{}, fmt.Errorf("systemd is %q: %s", say, strings.TrimSpace(string(res.Stderr)))
	}
	// sshd runs in the template, with a throw-away host key that no CA
	// certified. A restored sandbox then needs no sshd (re)start: OpenSSH
	// 9.2 re-executes itself for each connection and reads the host key and
	// certificate anew, and activation overwrites both before the first.
	hostKey, err := throwAwayHostKey()
	if err != nil {
		return Template{}, err
	}
	if err := d.activate(ctx, dom, []guestFile{{Path: templateHostKeyPath, Mode: 0o600, Content: hostKey}}, activation{}); err != nil {
		return Template{}, fmt.Errorf("start sshd: %w", err)
	}
	// Flush the guest's dirty pages so the disk and memory image agree on as
	// much as possible (the overlay is only ever read from now on).
	d.guestExec(ctx, dom, "/bin/sync", nil, nil)
	boot := time.Since(t0)
	t1 := time.Now()
	if err := dom.SaveFlags(part, "", 0); err != nil {
		return Template{}, fmt.Errorf("save memory image: %w", err)
	}
	t := Template{
		Key: key, Image: img.Name, ImageHash: img.Hash,
		SaveFile: d.templatePath(key, ".save"), Disk: disk,
		MemoryMiB: d.cfg.MemoryMiB, VCPUs: d.cfg.VCPUs, DomainType: d.cfg.DomainType,
		SystemdSay: say, Created: time.Now().UTC(), BootTime: boot, SaveTime: time.Since(t1),
	}
	if err := os.Rename(part, t.SaveFile); err != nil {
		return Template{}, fmt.Errorf("save memory image: %w", err)
	}
	b, _ := json.MarshalIndent(t, "", "  ")
	side := d.templatePath(key, ".json")
	if err := os.WriteFile(side+".part", b, 0o644); err != nil {
		return Template{}, fmt.Errorf("template sidecar: %w", err)
	}
	if err := os.Rename(side+".part", side); err != nil {
		return Template{}, fmt.Errorf("template sidecar: %w", err)
	}
	ok = true
	return t, nil
}

// Templates boot with a NIC whose link stays down (restores rewrite its
// MAC and bring it up after the guest has taken the new one; no PCI
// hot-plug). templateLayout marks such templates in their key; one
// without it is from before, and its restores hot-plug a NIC.
const (
	templateLayout = "-nic"
	templateMAC    = "02:00:00:a1:70:01" // locally administered; never carries a frame
)

// templateKey names the template of an image (its hash and layout).
func templateKey(img image) string { return img.Name + "-" + img.Hash + templateLayout }

// templateHostKeyPath is where the golden image's sshd looks for its key.
const templateHostKeyPath = "/etc/ssh/airlock/host_ed25519_key"

// throwAwayHostKey makes an OpenSSH ed25519 private key for the template.
func throwAwayHostKey() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("template host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "airlock-template")
	if err != nil {
		return nil, fmt.Errorf("template host key: %w", err)
	}
	return pem.EncodeToMemory(block), nil
}

// restoreXML turns the template's saved definition into the sandbox's:
// its name, UUID, overlay, console log and metadata. Devices, addresses
// and the machine type stay as saved (the memory image depends on them).
func (d *Driver) restoreXML(saved, name, uuid, disk string, m meta) (string, error) {
	var def libvirtxml.Domain
	if err := def.Unmarshal(saved); err != nil {
		return "", fmt.Errorf("parse saved xml: %w", err)
	}
	def.Name, def.UUID, def.ID = name, uuid, nil
	def.Metadata = &libvirtxml.DomainMetadata{XML: m.element()}
	if def.Devices == nil || len(def.Devices.Disks) != 1 || def.Devices.Disks[0].Source == nil {
		return "", fmt.Errorf("saved xml: want exactly one disk")
	}
	def.Devices.Disks[0].Source.File = &libvirtxml.DomainDiskSourceFile{File: disk}
	def.Devices.Disks[0].BackingStore = nil // libvirt probes the new chain
	for i := range def.Devices.Serials {
		if s := def.Devices.Serials[i].Source; s != nil && s.File != nil {
			s.File.Path = d.consoleLog(name)
		}
	}
	for i := range def.Devices.Consoles {
		if s := def.Devices.Consoles[i].Source; s != nil && s.File != nil {
			s.File.Path = d.consoleLog(name)
		}
	}
	for i := range def.Devices.Channels {
		if s := def.Devices.Channels[i].Source; s != nil && s.UNIX != nil {
			s.UNIX.Path = "" // libvirt picks a path under the new domain's dir
		}
	}
	// The template's NIC becomes this sandbox's: its MAC and network, a
	// new tap and network port; the link stays down until activation.
	for i := range def.Devices.Interfaces {
		n := &def.Devices.Interfaces[i]
		n.MAC = &libvirtxml.DomainInterfaceMAC{Address: m.MAC}
		n.Source = &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: m.Network}}
		n.Target = nil
	}
	return def.Marshal()
}

// restoreTemplate starts a defined, never-booted sandbox from the
// template's memory image. libvirt refuses to restore an image under
// another name (DESIGN §9), so a copy of the image gets the sandbox's
// definition written into its header, and that copy is restored.
func (d *Driver) restoreTemplate(ctx context.Context, conn *libvirt.Connect, dom *libvirt.Domain, name string, m meta, t Template) error {
	uuid, err := dom.GetUUIDString()
	if err != nil {
		return fmt.Errorf("uuid of %s: %w", name, err)
	}
	def, err := domainDef(dom, libvirt.DOMAIN_XML_INACTIVE)
	if err != nil {
		return err
	}
	disks := diskPaths(def)
	if len(disks) != 1 {
		return fmt.Errorf("restore %s: want one disk, have %d", name, len(disks))
	}
	saved, err := ReadSaveImageXML(t.SaveFile)
	if err != nil {
		return err
	}
	x, err := d.restoreXML(saved, name, uuid, disks[0], m)
	if err != nil {
		return err
	}
	img := filepath.Join(d.cfg.StateDir, "run", name+".save")
	defer os.Remove(img)
	if !d.claimSpare(t, img, x) {
		if err := copySaveImage(t.SaveFile, img, x); err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
	}
	d.refillSpare(t)
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := conn.DomainRestoreFlags(img, "", libvirt.DOMAIN_SAVE_RUNNING); err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	return nil
}
