package virt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// image is one resolved golden image.
type image struct {
	Name, Hash string
	Dir        string // resolved <cache>/<name>/<hash>
	Disk       string // read-only base, never written
	Kernel     string
	Initrd     string
}

var imageNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// resolveImage finds <cache>/<name>/current. Anything missing is
// ErrUnknownImage: the caller asked for an image this host does not have.
func (d *Driver) resolveImage(name string) (image, error) {
	if !imageNameRE.MatchString(name) {
		return image{}, fmt.Errorf("%w: %q is not an image name", sandbox.ErrUnknownImage, name)
	}
	cur := filepath.Join(d.cfg.ImageCache, name, "current")
	dir, err := filepath.EvalSymlinks(cur)
	if err != nil {
		return image{}, fmt.Errorf("%w: %q (no %s)", sandbox.ErrUnknownImage, name, cur)
	}
	img := image{
		Name:   name,
		Dir:    dir,
		Disk:   filepath.Join(dir, "disk.qcow2"),
		Kernel: filepath.Join(dir, "vmlinuz"),
		Initrd: filepath.Join(dir, "initrd.img"),
		Hash:   filepath.Base(dir),
	}
	for _, f := range []string{img.Disk, img.Kernel, img.Initrd} {
		if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
			return image{}, fmt.Errorf("%w: %q (missing %s)", sandbox.ErrUnknownImage, name, f)
		}
	}
	if img.Hash == "current" { // a plain directory, not the hash-keyed layout
		img.Hash = "unversioned"
		if b, err := os.ReadFile(filepath.Join(dir, "inputs.sha256")); err == nil {
			if f := strings.Fields(string(bytes.TrimSpace(b))); len(f) > 0 && len(f[0]) >= 12 {
				img.Hash = f[0][:12]
			}
		}
	}
	return img, nil
}

func (d *Driver) pool(conn *libvirt.Connect) (*libvirt.StoragePool, error) {
	p, err := conn.LookupStoragePoolByName(d.cfg.Pool)
	if err != nil {
		return nil, fmt.Errorf("storage pool %s: %w", d.cfg.Pool, err)
	}
	if active, err := p.IsActive(); err == nil && !active {
		if err := p.Create(0); err != nil {
			p.Free()
			return nil, fmt.Errorf("start storage pool %s: %w", d.cfg.Pool, err)
		}
	}
	return p, nil
}

// createOverlay makes a qcow2 volume in the pool whose backing file is
// backing (the read-only base or a saved template's disk) and returns its
// path. An existing volume of that name is an error: callers sweep first.
func (d *Driver) createOverlay(conn *libvirt.Connect, volName, backing string) (string, error) {
	p, err := d.pool(conn)
	if err != nil {
		return "", err
	}
	defer p.Free()
	vx := &libvirtxml.StorageVolume{
		Name:     volName,
		Capacity: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: qcow2Size(backing)},
		Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "qcow2"}},
		BackingStore: &libvirtxml.StorageVolumeBackingStore{
			Path:   backing,
			Format: &libvirtxml.StorageVolumeTargetFormat{Type: "qcow2"},
		},
	}
	s, err := vx.Marshal()
	if err != nil {
		return "", fmt.Errorf("volume xml: %w", err)
	}
	vol, err := p.StorageVolCreateXML(s, 0)
	if err != nil {
		return "", fmt.Errorf("create overlay %s: %w", volName, err)
	}
	defer vol.Free()
	path, err := vol.GetPath()
	if err != nil {
		return "", fmt.Errorf("overlay path: %w", err)
	}
	return path, nil
}

// qcow2Size is the virtual size in a qcow2 header (big-endian u64 at
// offset 24, after the "QFI\xfb" magic); 4 GiB for anything else (the
// test driver's fake images).
func qcow2Size(path string) uint64 {
	const fallback = 4 << 30
	f, err := os.Open(path)
	if err != nil {
		return fallback
	}
	defer f.Close()
	var h [32]byte
	if _, err := io.ReadFull(f, h[:]); err != nil || string(h[:4]) != "QFI\xfb" {
		return fallback
	}
	if n := binary.BigEndian.Uint64(h[24:32]); n > 0 {
		return n
	}
	return fallback
}

// volumesOf lists pool volumes that belong to a sandbox: "<name>.qcow2"
// and "<name>.<anything>" (external snapshot overlays), plus extra paths
// (disk sources seen in its definitions) that live in the pool.
func (d *Driver) volumesOf(conn *libvirt.Connect, name string, extra []string) ([]string, error) {
	p, err := d.pool(conn)
	if err != nil {
		return nil, err
	}
	defer p.Free()
	if err := p.Refresh(0); err != nil {
		return nil, fmt.Errorf("refresh pool: %w", err)
	}
	vols, err := p.ListAllStorageVolumes(0)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	want := map[string]bool{}
	for _, e := range extra {
		want[e] = true
	}
	var out []string
	for _, v := range vols {
		vn, _ := v.GetName()
		path, _ := v.GetPath()
		if strings.HasPrefix(vn, name+".") || want[path] {
			out = append(out, path)
		}
		v.Free()
	}
	return out, nil
}

// deleteVolumes removes the given volume paths; missing ones are fine.
func (d *Driver) deleteVolumes(conn *libvirt.Connect, paths []string) error {
	var errs []error
	for _, path := range paths {
		vol, err := conn.LookupStorageVolByPath(path)
		if err != nil {
			if lvCode(err) != libvirt.ERR_NO_STORAGE_VOL {
				errs = append(errs, fmt.Errorf("find volume %s: %w", path, err))
			}
			continue
		}
		if err := vol.Delete(0); err != nil && lvCode(err) != libvirt.ERR_NO_STORAGE_VOL {
			errs = append(errs, fmt.Errorf("delete volume %s: %w", path, err))
		}
		vol.Free()
	}
	return joinErrs(errs)
}

// poolVolumeNames lists the names of all volumes in the pool.
func (d *Driver) poolVolumeNames(conn *libvirt.Connect) ([]string, error) {
	p, err := d.pool(conn)
	if err != nil {
		return nil, err
	}
	defer p.Free()
	if err := p.Refresh(0); err != nil {
		return nil, fmt.Errorf("refresh pool: %w", err)
	}
	vols, err := p.ListAllStorageVolumes(0)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	var out []string
	for _, v := range vols {
		if n, err := v.GetName(); err == nil {
			out = append(out, n)
		}
		v.Free()
	}
	return out, nil
}

func joinErrs(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("%w (and %d more: %s)", errs[0], len(errs)-1, strings.Join(msgs[1:], "; "))
}
