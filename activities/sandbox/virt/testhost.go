package virt

import (
	"fmt"
	"os"
	"path/filepath"
)

// TestImage is the golden image name TestConfig provides.
const TestImage = "bookworm"

// Foreign domains TestConfig defines: not sandboxes, never to be touched.
const (
	TestForeignDomain  = "prod-web-1"
	TestUnmanagedSbx   = "sbx-not-airlock" // sbx- prefix but no Airlock metadata
	testHostMemoryKiB  = 8 << 20
	testReserveMiB     = 256
	testImageHashDir   = "0123456789ab"
	testForeignMemKiB  = 524288
	testNetworkXMLBody = `<network>
    <name>airlock-sbx</name>
    <bridge name='airlock-sbx0'/>
    <ip address='10.77.0.1' netmask='255.255.255.0'>
      <dhcp><range start='10.77.0.100' end='10.77.0.250'/></dhcp>
    </ip>
  </network>`
)

// TestConfig prepares a host for libvirt's test driver under dir: a node
// description (8 GiB, 2 CPUs) with the sandbox network airlock-sbx, the
// dir pool airlock and two domains that are not Airlock's; a fake golden
// image; a state dir. The returned Config uses FakeGuest and FakeFirewall,
// so every Hypervisor method works without QEMU. Each connection to the
// URI starts from this fresh state.
func TestConfig(dir string) (Config, error) {
	imgDir := filepath.Join(dir, "images", TestImage, testImageHashDir)
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		return Config{}, err
	}
	for _, f := range []string{"disk.qcow2", "vmlinuz", "initrd.img"} {
		if err := os.WriteFile(filepath.Join(imgDir, f), []byte("fake "+f+"\n"), 0o444); err != nil && !os.IsPermission(err) {
			return Config{}, err
		}
	}
	cur := filepath.Join(dir, "images", TestImage, "current")
	os.Remove(cur)
	if err := os.Symlink(testImageHashDir, cur); err != nil {
		return Config{}, err
	}
	host := fmt.Sprintf(`<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><active>2</active><cpus>2</cpus><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
  <memory>%d</memory>
  %s
  <pool type='dir'>
    <name>airlock</name>
    <target><path>%s</path></target>
  </pool>
  <domain type='test'><name>%s</name><memory>%d</memory><os><type>hvm</type></os></domain>
  <domain type='test'><name>%s</name><memory>%d</memory><os><type>hvm</type></os></domain>
</node>
`, testHostMemoryKiB, testNetworkXMLBody, filepath.Join(dir, "disks"),
		TestForeignDomain, testForeignMemKiB, TestUnmanagedSbx, testForeignMemKiB)
	hostFile := filepath.Join(dir, "host.xml")
	if err := os.WriteFile(hostFile, []byte(host), 0o644); err != nil {
		return Config{}, err
	}
	return Config{
		URI:          "test://" + hostFile,
		Host:         "test-host",
		ImageCache:   filepath.Join(dir, "images"),
		StateDir:     filepath.Join(dir, "state"),
		DomainType:   "test",
		MaxSandboxes: 4,
		ReserveMiB:   testReserveMiB,
		Guest:        &FakeGuest{},
		Firewall:     &FakeFirewall{},
		// Tests create and reconcile within seconds.
		ReconcileMinAge: -1,
	}, nil
}
