// Package virt is the libvirt implementation of sandbox.Hypervisor. It is
// the only package that links libvirt (cgo). It talks to libvirtd through
// libvirt.org/go/libvirt only; the one exception is nft for the egress set,
// which is not libvirt's.
package virt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// Config is one hypervisor host. Zero values take the defaults below.
type Config struct {
	URI        string // libvirt URI; default qemu:///system (test:///... in tests)
	Host       string // host name reported by Capacity; default os.Hostname()
	ImageCache string // golden images: <ImageCache>/<image>/current/{disk.qcow2,vmlinuz,initrd.img}
	StateDir   string // templates/, logs/, run/ live here; default /var/lib/airlock
	Network    string // libvirt network for sandboxes; default airlock-sbx
	Pool       string // libvirt dir pool for overlays; default airlock
	DomainType string // "qemu" (TCG, default) or "kvm", per host
	TBCacheMiB int    // TCG translation cache; default 128 (qemu only)
	MemoryMiB  int    // default guest memory; default 512
	VCPUs      int    // default vCPUs; default 1
	Cmdline    string // kernel command line; default "root=/dev/vda rw console=ttyS0"

	MaxSandboxes int   // defined sandboxes allowed at once; default 16
	ReserveMiB   int64 // host memory never handed to sandboxes; default 1024

	// LibvirtConfigDir is where libvirtd keeps persistent domain XML; Destroy
	// removes a stale NAME.xml there (DESIGN §9). Default /etc/libvirt/qemu
	// for qemu:// URIs, none otherwise.
	LibvirtConfigDir string
	StopTimeout      time.Duration // graceful shutdown before power-off; default 30s
	// ReconcileMinAge spares sandboxes created less than this long ago
	// from Reconcile; default 15m. Negative disables the grace.
	ReconcileMinAge time.Duration
	BootTimeout     time.Duration // bound on Start and on a template boot; default 5m

	// Logf, if set, receives one line per phase of Start and template
	// builds, with its duration.
	Logf func(format string, args ...any)

	// Guest talks to the QEMU guest agent; default: libvirt's QemuAgentCommand.
	Guest Guest
	// Firewall edits the egress set; default: nft set inet airlock egress_open.
	Firewall Firewall
}

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.URI, "qemu:///system")
	if c.Host == "" {
		c.Host, _ = os.Hostname()
	}
	def(&c.ImageCache, envOr("AIRLOCK_IMAGE_CACHE", "/var/cache/airlock/images"))
	def(&c.StateDir, envOr("AIRLOCK_STATE_DIR", "/var/lib/airlock"))
	def(&c.Network, "airlock-sbx")
	def(&c.Pool, "airlock")
	def(&c.DomainType, "qemu")
	def(&c.Cmdline, "root=/dev/vda rw console=ttyS0")
	if c.TBCacheMiB == 0 {
		c.TBCacheMiB = 128
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 512
	}
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.MaxSandboxes == 0 {
		c.MaxSandboxes = 16
	}
	if c.ReserveMiB == 0 {
		c.ReserveMiB = 1024
	}
	if c.LibvirtConfigDir == "" && len(c.URI) >= 7 && c.URI[:7] == "qemu://" {
		c.LibvirtConfigDir = "/etc/libvirt/qemu"
	}
	if c.ReconcileMinAge == 0 {
		c.ReconcileMinAge = 15 * time.Minute
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 30 * time.Second
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = 5 * time.Minute
	}
	if c.Guest == nil {
		c.Guest = QemuAgent{}
	}
	if c.Firewall == nil {
		c.Firewall = NFT{}
	}
}

func envOr(k, v string) string {
	if s := os.Getenv(k); s != "" {
		return s
	}
	return v
}

// Driver implements sandbox.Hypervisor (and sandbox.Reconciler) over one
// libvirt connection, re-opened when it drops. Safe for concurrent use.
type Driver struct {
	cfg Config

	connMu sync.Mutex
	conn   *libvirt.Connect

	// alloc serialises the steps that hand out host resources (capacity,
	// IPs, names) and the sweeps that take them back.
	alloc sync.Mutex
	// tmpl serialises template builds inside this process; a file lock
	// covers other processes.
	tmpl sync.Mutex
	// spare holds ready copies of template memory images (spare.go).
	spare spares
}

var (
	_ sandbox.Hypervisor = (*Driver)(nil)
	_ sandbox.Reconciler = (*Driver)(nil)
)

// New opens the connection and checks the state directories.
func New(cfg Config) (*Driver, error) {
	cfg.setDefaults()
	switch cfg.DomainType {
	case "qemu", "kvm", "test":
	default:
		return nil, fmt.Errorf("%w: domain type %q (want qemu or kvm)", sandbox.ErrBadInput, cfg.DomainType)
	}
	for _, dir := range []string{"templates", "logs", "run"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, dir), 0o755); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	d := &Driver{cfg: cfg}
	if _, err := d.connect(); err != nil {
		return nil, err
	}
	return d, nil
}

// Config returns the effective configuration (defaults filled in).
func (d *Driver) Config() Config { return d.cfg }

// Close drops the libvirt connection.
func (d *Driver) Close() error {
	d.spare.wg.Wait()
	d.connMu.Lock()
	defer d.connMu.Unlock()
	if d.conn == nil {
		return nil
	}
	_, err := d.conn.Close()
	d.conn = nil
	return err
}

// connect returns the live connection, re-opening it if it was closed.
func (d *Driver) connect() (*libvirt.Connect, error) {
	d.connMu.Lock()
	defer d.connMu.Unlock()
	if d.conn != nil {
		if alive, err := d.conn.IsAlive(); err == nil && alive {
			return d.conn, nil
		}
		d.conn.Close()
		d.conn = nil
	}
	c, err := libvirt.NewConnect(d.cfg.URI)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", d.cfg.URI, err)
	}
	d.conn = c
	return c, nil
}

// lvCode is the libvirt error number inside err, or -1.
func lvCode(err error) libvirt.ErrorNumber {
	var e libvirt.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return -1
}

func isNoDomain(err error) bool { return lvCode(err) == libvirt.ERR_NO_DOMAIN }

// validName accepts the names sandboxes may have: the sbx- prefix, then
// [a-z0-9-], at most 63 characters (a hostname label).
func validName(name string) bool {
	if len(name) <= len(sandbox.NamePrefix) || len(name) > 63 || name[:len(sandbox.NamePrefix)] != sandbox.NamePrefix {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func badInput(format string, a ...any) error {
	return fmt.Errorf("%w: %s", sandbox.ErrBadInput, fmt.Sprintf(format, a...))
}

// stateName maps libvirt's domain state to the words Sandbox.State uses.
func stateName(s libvirt.DomainState) string {
	switch s {
	case libvirt.DOMAIN_RUNNING:
		return "running"
	case libvirt.DOMAIN_BLOCKED:
		return "blocked"
	case libvirt.DOMAIN_PAUSED:
		return "paused"
	case libvirt.DOMAIN_SHUTDOWN:
		return "shutdown"
	case libvirt.DOMAIN_SHUTOFF:
		return "shutoff"
	case libvirt.DOMAIN_CRASHED:
		return "crashed"
	case libvirt.DOMAIN_PMSUSPENDED:
		return "pmsuspended"
	}
	return "nostate"
}

// phase logs how long a step took, if Config.Logf is set.
func (d *Driver) phase(name, what string, since time.Time) {
	if d.cfg.Logf != nil {
		d.cfg.Logf("%s: %s %v", name, what, time.Since(since).Round(time.Millisecond))
	}
}

func (d *Driver) consoleLog(name string) string {
	return filepath.Join(d.cfg.StateDir, "logs", name+".console.log")
}

// CheckHost reports what the host lacks for sandboxes: an active sandbox
// network and an active storage pool (deploy/host/setup.sh makes both).
func (d *Driver) CheckHost() error {
	conn, err := d.connect()
	if err != nil {
		return err
	}
	n, err := conn.LookupNetworkByName(d.cfg.Network)
	if err != nil {
		return fmt.Errorf("network %s is not defined: %w", d.cfg.Network, err)
	}
	active, _ := n.IsActive()
	n.Free()
	if !active {
		return fmt.Errorf("network %s is not active", d.cfg.Network)
	}
	p, err := conn.LookupStoragePoolByName(d.cfg.Pool)
	if err != nil {
		return fmt.Errorf("storage pool %s is not defined: %w", d.cfg.Pool, err)
	}
	active, _ = p.IsActive()
	p.Free()
	if !active {
		return fmt.Errorf("storage pool %s is not active", d.cfg.Pool)
	}
	return nil
}
