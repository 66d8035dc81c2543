package virt

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// writeSaveImage writes a save image the way libvirt lays it out.
func writeSaveImage(t *testing.T, path, xml, cookie string, stream []byte) uint32 {
	t.Helper()
	data := append([]byte(xml), 0)
	h := saveHeader{Version: 2, WasRunning: 1}
	copy(h.Magic[:], saveMagic)
	if cookie != "" {
		h.CookieOffset = uint32(len(data))
		data = append(append(data, cookie...), 0)
	}
	data = append(data, make([]byte, 64<<10)...) // libvirt's padding
	h.DataLen = uint32(len(data))
	var buf bytes.Buffer
	require.NoError(t, binary.Write(&buf, binary.LittleEndian, h))
	require.Equal(t, saveHeaderLen, buf.Len())
	buf.Write(data)
	buf.Write(stream)
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
	return h.DataLen
}

func TestSaveImageRewrite(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "t.save"), filepath.Join(dir, "s.save")
	stream := bytes.Repeat([]byte("QEVM-stream-"), 1000)
	dataLen := writeSaveImage(t, src, "<domain><name>tmpl</name></domain>", "<qemu-migration/>", stream)

	newXML := "<domain><name>sbx-a-much-longer-name</name>" + strings.Repeat(" ", 500) + "</domain>"
	require.NoError(t, copySaveImage(src, dst, newXML))
	f, err := os.Open(dst)
	require.NoError(t, err)
	defer f.Close()
	sd, err := readSaveData(f)
	require.NoError(t, err)
	assert.Equal(t, newXML, sd.XML)
	assert.Equal(t, "<qemu-migration/>", string(sd.Cookie), "cookie kept")
	assert.Equal(t, dataLen, sd.Header.DataLen, "data length unchanged: the stream stays where it was")
	assert.Equal(t, uint32(1), sd.Header.WasRunning)
	rest, err := os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, stream, rest[saveHeaderLen+int(dataLen):], "migration stream copied unchanged")

	// In place, too.
	require.NoError(t, RewriteSaveImageXML(dst, "<domain><name>x</name></domain>"))
	got, err := ReadSaveImageXML(dst)
	require.NoError(t, err)
	assert.Equal(t, "<domain><name>x</name></domain>", got)

	err = copySaveImage(src, dst, strings.Repeat("x", int(dataLen)))
	assert.ErrorContains(t, err, "needs")

	require.NoError(t, os.WriteFile(dst, append([]byte("LibvirtQemudPart"), make([]byte, 200)...), 0o600))
	_, err = ReadSaveImageXML(dst)
	assert.ErrorContains(t, err, "bad magic", "a partial image is refused")
}

func TestDomainXML(t *testing.T) {
	for _, typ := range []string{"qemu", "kvm"} {
		d := &Driver{cfg: Config{DomainType: typ}}
		d.cfg.setDefaults()
		x, err := d.domainXML(domainSpec{Name: "sbx-a", UUID: newUUID(), MemoryMiB: 512, VCPUs: 1,
			Disk: "/d/sbx-a.qcow2", Kernel: "/k", Initrd: "/i", MAC: "52:54:00:01:02:03", Network: "airlock-sbx",
			ConsoleLog: "/l/sbx-a.console.log", Meta: meta{Owner: "task-1", Image: "bookworm"}})
		require.NoError(t, err)
		assert.Contains(t, x, `<domain type="`+typ+`">`)
		assert.Contains(t, x, `<cmdline>root=/dev/vda rw console=ttyS0</cmdline>`)
		assert.Contains(t, x, `name="org.qemu.guest_agent.0"`)
		assert.Contains(t, x, `<source network="airlock-sbx">`)
		assert.Contains(t, x, `xmlns:airlock="`+MetadataNS+`"`)
		assert.Contains(t, x, `<owner>task-1</owner>`)
		if typ == "qemu" {
			assert.Contains(t, x, `<tb-cache unit="MiB">128</tb-cache>`)
		} else {
			assert.NotContains(t, x, "tb-cache")
			assert.Contains(t, x, `mode="host-passthrough"`)
		}
	}
}

func TestRestoreXML(t *testing.T) {
	saved, err := os.ReadFile("testdata/saved.xml")
	require.NoError(t, err)
	d := &Driver{cfg: Config{StateDir: "/state"}}
	d.cfg.setDefaults()
	m := meta{Owner: "task-9", Image: "bookworm", MAC: "52:54:00:aa:bb:cc", IP: "10.77.0.9", Restored: true, Started: true}
	x, err := d.restoreXML(string(saved), "sbx-task-9", "11111111-2222-4333-8444-555555555555", "/state/disks/sbx-task-9.qcow2", m)
	require.NoError(t, err)
	assert.Contains(t, x, "<name>sbx-task-9</name>")
	assert.Contains(t, x, "<uuid>11111111-2222-4333-8444-555555555555</uuid>")
	assert.Contains(t, x, `file="/state/disks/sbx-task-9.qcow2"`)
	assert.Contains(t, x, `path="/state/logs/sbx-task-9.console.log"`)
	assert.Contains(t, x, "<owner>task-9</owner>")
	assert.NotContains(t, x, "tmpl-", "nothing of the template's identity is left")
	assert.Contains(t, x, `slot="0x03"`, "device addresses stay as saved")
	assert.NotContains(t, x, "<interface", "a template without a NIC gives none (Start hot-plugs one)")

	// A template with the NIC (link down): it becomes the sandbox's, with a
	// new tap and network port, and stays down until activation.
	nic := `<interface type='network'><mac address='` + templateMAC + `'/>` +
		`<source network='airlock-sbx' portid='0b0f5a4e-1f5e-4a54-9a55-3c7c5c0b1e01' bridge='airlock-sbx0'/>` +
		`<target dev='vnet7'/><model type='virtio'/><link state='down'/><alias name='net0'/>` +
		`<address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></interface>`
	withNIC := strings.Replace(string(saved), "</devices>", nic+"</devices>", 1)
	m.Network = "airlock-sbx"
	x, err = d.restoreXML(withNIC, "sbx-task-9", "11111111-2222-4333-8444-555555555555", "/state/disks/sbx-task-9.qcow2", m)
	require.NoError(t, err)
	require.Contains(t, x, `<mac address="52:54:00:aa:bb:cc">`)
	require.NotContains(t, x, templateMAC)
	require.Contains(t, x, `<source network="airlock-sbx">`)
	require.NotContains(t, x, "portid")
	require.NotContains(t, x, "vnet7")
	require.Contains(t, x, `<link state="down">`)
	require.Contains(t, x, `slot="0x05"`, "the NIC keeps its PCI address")
}

func TestNormalizeIdentity(t *testing.T) {
	id, err := normalizeIdentity("sbx-a", nil)
	require.NoError(t, err)
	assert.Equal(t, "sbx-a", id.Hostname)
	assert.Regexp(t, `^[0-9a-f]{32}$`, id.MachineID)
	assert.Len(t, id.Entropy, 64)
	id2, _ := normalizeIdentity("sbx-a", nil)
	assert.NotEqual(t, id.MachineID, id2.MachineID)
	assert.NotEqual(t, id.Entropy, id2.Entropy)

	for _, bad := range []*sandbox.Identity{
		{MachineID: "ABC"},
		{Hostname: "Not_A_Host"},
		{Files: []sandbox.GuestFile{{Path: "relative", Mode: 0o644}}},
		{Files: []sandbox.GuestFile{{Path: "/etc/../x", Mode: 0o644}}},
		{Files: []sandbox.GuestFile{{Path: "/etc/a\nb", Mode: 0o644}}},
		{Files: []sandbox.GuestFile{{Path: "/etc/x", Mode: 0o10644}}},
	} {
		_, err := normalizeIdentity("sbx-a", bad)
		assert.ErrorIs(t, err, sandbox.ErrBadInput, "%+v", bad)
	}
}

func TestInstallRecords(t *testing.T) {
	b := installRecords([]guestFile{
		{Path: "/etc/a b", Mode: 0o600, Content: []byte("x\ny\n")},
		{Path: "/e", Mode: 0o644},
	})
	assert.Equal(t, "0600 4 /etc/a b\nx\ny\n0644 0 /e\n", string(b))
}

func TestNames(t *testing.T) {
	for _, ok := range []string{"sbx-a", "sbx-task-01hzx3-v1", sandbox.NameFor(strings.Repeat("A", 80), "")} {
		assert.True(t, validName(ok), ok)
	}
	for _, bad := range []string{"sbx-", "prod-web-1", "sbx-A", "sbx-a.b", "sbx-" + strings.Repeat("a", 60), "tmpl-x"} {
		assert.False(t, validName(bad), bad)
	}
	assert.Regexp(t, `^52:54:00(:[0-9a-f]{2}){3}$`, newMAC())
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, newUUID())
}

func TestParseNFTSet(t *testing.T) {
	out := []byte(`{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "egress_open",
	  "table": "airlock", "type": "ipv4_addr", "handle": 3, "flags": ["timeout"],
	  "elem": ["10.77.0.9", {"elem": {"val": "10.77.0.5", "timeout": 3600, "expires": 3599}}]}}]}`)
	ips, err := parseNFTSet(out)
	require.NoError(t, err)
	assert.Equal(t, []string{"10.77.0.5", "10.77.0.9"}, ips)
	ips, err = parseNFTSet([]byte(`{"nftables": [{"set": {"name": "egress_open"}}]}`))
	require.NoError(t, err)
	assert.Empty(t, ips)
	assert.ErrorIs(t, NFT{}.Open(context.Background(), "10.77.0.1; flush ruleset"), sandbox.ErrBadInput)
}

func TestNFTMissingBinaryIsClosed(t *testing.T) {
	n := NFT{Binary: "/nonexistent/nft"}
	ctx := context.Background()
	assert.NoError(t, n.Close(ctx, "10.77.0.9"), "no nft: nothing is open")
	ips, err := n.ListOpen(ctx)
	assert.NoError(t, err)
	assert.Empty(t, ips)
	assert.Error(t, n.Open(ctx, "10.77.0.9"), "opening needs nft")
}

// TestSpareSaveImage: a restore claims the ready copy (its header gets the
// sandbox's XML, the stream is the template's), a second claim finds none
// until the background refill has made another, and the template itself
// is never touched.
func TestSpareSaveImage(t *testing.T) {
	d := &Driver{cfg: Config{StateDir: t.TempDir()}}
	require.NoError(t, os.MkdirAll(filepath.Join(d.cfg.StateDir, "templates"), 0o755))
	tm := Template{Key: "bookworm-abc-nic", SaveFile: d.templatePath("bookworm-abc-nic", ".save")}
	stream := bytes.Repeat([]byte("QEVM-stream-"), 1000)
	writeSaveImage(t, tm.SaveFile, "<domain><name>tmpl</name></domain>", "", stream)
	orig, err := os.ReadFile(tm.SaveFile)
	require.NoError(t, err)

	dst := filepath.Join(t.TempDir(), "sbx-a.save")
	require.False(t, d.claimSpare(tm, dst, "<domain><name>sbx-a</name></domain>"), "no spare yet")
	require.NoFileExists(t, dst)

	d.refillSpare(tm)
	d.spare.wg.Wait()
	require.True(t, d.claimSpare(tm, dst, "<domain><name>sbx-a</name></domain>"))
	got, err := ReadSaveImageXML(dst)
	require.NoError(t, err)
	require.Equal(t, "<domain><name>sbx-a</name></domain>", got)
	b, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.True(t, bytes.HasSuffix(b, stream), "the template's stream")
	require.False(t, d.claimSpare(tm, filepath.Join(t.TempDir(), "sbx-b.save"), "<domain/>"), "claimed once only")

	after, err := os.ReadFile(tm.SaveFile)
	require.NoError(t, err)
	require.Equal(t, orig, after, "the template's image is never written")
	left, err := filepath.Glob(d.sparePath(tm) + ".part-*")
	require.NoError(t, err)
	require.Empty(t, left)
}
