package virt_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/activities/sandbox/sandboxtest"
	"github.com/airlock-dev/airlock/activities/sandbox/virt"
)

const realImage = "bookworm"

// realDriver connects to qemu:///system, or skips (fails with CI=true)
// naming what is missing: libvirtd, the network, the pool or the image.
func realDriver(t *testing.T) *virt.Driver {
	t.Helper()
	skip := func(msg string) { // with CI=true a missing prerequisite fails
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	missing := func(what string) { skip("real VMs: " + what + " (run `make host image`)") }
	if testing.Short() {
		skip("real VMs: not with -short")
	}
	cache := os.Getenv("AIRLOCK_IMAGE_CACHE")
	if cache == "" {
		cache = "/var/cache/airlock/images"
	}
	for _, f := range []string{"disk.qcow2", "vmlinuz", "initrd.img"} {
		if _, err := os.Stat(filepath.Join(cache, realImage, "current", f)); err != nil {
			missing("golden image " + realImage + " missing " + f + " under " + cache)
		}
	}
	if _, err := os.Stat("/run/libvirt/libvirt-sock"); err != nil {
		missing("libvirtd is not running (no /run/libvirt/libvirt-sock)")
	}
	d, err := virt.New(virt.Config{Logf: t.Logf, ReconcileMinAge: -1})
	if err != nil {
		missing("cannot connect to qemu:///system: " + err.Error())
	}
	t.Cleanup(func() { d.Close() })
	if err := d.CheckHost(); err != nil {
		missing(err.Error())
	}
	return d
}

func realCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// createReal creates a sandbox with a test-<random> owner and destroys it
// (checking that nothing is left) when the test ends.
func createReal(t *testing.T, d *virt.Driver, boot sandbox.BootPreference) sandbox.Sandbox {
	t.Helper()
	ctx := realCtx(t)
	sb, err := d.Create(ctx, sandbox.Spec{Owner: sandboxtest.Owner(t), Image: realImage, Boot: boot})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, d.Destroy(ctx, sb.Name))
		left, err := d.Leftovers(ctx, sb.Name)
		require.NoError(t, err)
		require.Empty(t, left, "destroy left things behind")
	})
	return sb
}

// TestConformanceQEMU runs the Hypervisor conformance suite on real VMs.
func TestConformanceQEMU(t *testing.T) {
	realDriver(t) // skip or fail early, naming what is missing
	sandboxtest.Run(t, func(t *testing.T) sandbox.Hypervisor { return realDriver(t) },
		sandboxtest.Caps{Image: realImage, Boot: true, RealGuest: true, Timeout: 10 * time.Minute})
}

// TestRealRestoreIdentities restores two sandboxes from one template: both
// reach agent + identity, and they have distinct machine-ids and host keys
// (the ones written for them), and a synced clock.
func TestRealRestoreIdentities(t *testing.T) {
	d := realDriver(t)
	ctx := realCtx(t)
	t0 := time.Now()
	tm, err := d.EnsureTemplate(ctx, realImage)
	require.NoError(t, err)
	t.Logf("template %s: ready after %v (boot %v, save %v)", tm.Key, time.Since(t0).Round(time.Millisecond), tm.BootTime, tm.SaveTime)

	type seen struct{ machineID, hostPub string }
	var got []seen
	for i := 0; i < 2; i++ {
		sb := createReal(t, d, sandbox.BootRestore)
		id := sandboxtest.Identity(t, sb.Name)
		before := time.Now()
		started, err := d.Start(ctx, sb.Name, id)
		require.NoError(t, err)
		t.Logf("restore to agent+identity+IP: %v (%s at %s)", time.Since(before).Round(time.Millisecond), sb.Name, started.IP)
		require.True(t, started.Restored, "started from the template")
		require.Equal(t, sb.IP, started.IP)

		mid, err := d.ReadGuestFile(ctx, sb.Name, "/etc/machine-id")
		require.NoError(t, err)
		require.Equal(t, id.MachineID+"\n", string(mid))
		pub, err := d.ReadGuestFile(ctx, sb.Name, sandboxtest.HostPubPath)
		require.NoError(t, err)
		require.Equal(t, string(id.Files[2].Content), string(pub))
		host, err := d.ReadGuestFile(ctx, sb.Name, "/etc/hostname")
		require.NoError(t, err)
		require.Equal(t, sb.Name+"\n", string(host))
		got = append(got, seen{string(mid), string(pub)})
		// sshd was already running in the template: the key it presents is
		// this sandbox's, read again for the new connection.
		require.Equal(t, strings.TrimSpace(string(pub)), presentedHostKey(t, started.IP))

		// The clock was synced: the guest's time is not the template's.
		res, err := d.GuestExec(ctx, sb.Name, "/bin/date", "+%s")
		require.NoError(t, err)
		guestNow, err := strconv.ParseInt(strings.TrimSpace(string(res.Stdout)), 10, 64)
		require.NoError(t, err)
		require.GreaterOrEqual(t, guestNow, before.Unix(), "guest clock is behind the start of the restore")
		// The entropy seed was consumed by activation.
		_, err = d.ReadGuestFile(ctx, sb.Name, "/run/airlock-entropy")
		require.Error(t, err, "airlock-activate removes the entropy seed")
	}
	require.NotEqual(t, got[0].machineID, got[1].machineID)
	require.NotEqual(t, got[0].hostPub, got[1].hostPub)
}

// presentedHostKey runs an SSH handshake with ip:22 up to the host key
// check, and returns the (certified) key the server presented, in
// authorized_keys form.
func presentedHostKey(t *testing.T, ip string) string {
	t.Helper()
	var got ssh.PublicKey
	errSeen := errors.New("host key seen")
	cfg := &ssh.ClientConfig{
		User: "root",
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			got = key
			return errSeen
		},
		Timeout: 30 * time.Second,
	}
	_, err := ssh.Dial("tcp", net.JoinHostPort(ip, "22"), cfg)
	require.ErrorIs(t, err, errSeen)
	if cert, ok := got.(*ssh.Certificate); ok {
		got = cert.Key
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(got)))
}

// hostIPv4s lists this host's IPv4 addresses outside loopback.
func hostIPv4s(t *testing.T) []string {
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	var out []string
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			out = append(out, ipn.IP.String())
		}
	}
	return out
}

// TestRealEgressClosedByDefault: a sandbox reaches none of the host's
// services — neither on the sandbox bridge address nor on any other host
// address — for a listener bound to 0.0.0.0.
func TestRealEgressClosedByDefault(t *testing.T) {
	d := realDriver(t)
	ctx := realCtx(t)
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	require.NoError(t, err)
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	sb := createReal(t, d, sandbox.BootAuto)
	_, err = d.Start(ctx, sb.Name, sandboxtest.Identity(t, sb.Name))
	require.NoError(t, err)
	open, err := d.EgressOpen(ctx, sb.Name)
	require.NoError(t, err)
	require.False(t, open, "egress is closed by default")

	targets := hostIPv4s(t)
	require.Contains(t, targets, "10.77.0.1", "the sandbox bridge address is a host address")
	for _, ip := range targets {
		url := fmt.Sprintf("http://%s:%d/", ip, port)
		res, err := d.GuestExec(ctx, sb.Name, "/usr/bin/curl", "-sS", "-o", "/dev/null", "-m", "3", url)
		require.NoError(t, err)
		t.Logf("curl %s: exit %d: %s", url, res.ExitCode, strings.TrimSpace(string(res.Stderr)))
		if ip == sb.IP[:strings.LastIndex(sb.IP, ".")]+".1" {
			// The host's address on the sandbox bridge: packets are
			// dropped by nftables (28, timed out), not refused.
			require.Equal(t, 28, res.ExitCode, "curl %s from the sandbox: %s", url, res.Stderr)
			continue
		}
		// Any other host address: no route (an isolated network) or, on
		// airlock-sbx with forward mode open, a route through the host
		// whose nftables input chain drops the packets (28).
		require.Contains(t, []int{7, 28}, res.ExitCode, "curl %s from the sandbox: %s", url, res.Stderr)
	}
	require.Zero(t, accepted.Load(), "the host listener saw a connection from the sandbox")
}

// TestRealRestoredLifecycle: a sandbox restored from the template (with its
// hot-plugged NIC) snapshots and reverts with memory — a file written after
// the snapshot is gone and the clock is synced again — then stops and
// cold-boots from its own overlay.
func TestRealRestoredLifecycle(t *testing.T) {
	d := realDriver(t)
	ctx := realCtx(t)
	_, err := d.EnsureTemplate(ctx, realImage)
	require.NoError(t, err)
	sb := createReal(t, d, sandbox.BootRestore)
	_, err = d.Start(ctx, sb.Name, sandboxtest.Identity(t, sb.Name))
	require.NoError(t, err)

	_, err = d.CreateSnapshot(ctx, sb.Name, "clean")
	require.NoError(t, err)
	require.NoError(t, d.WriteGuestFile(ctx, sb.Name, "/root/marker", []byte("after\n")))
	before := time.Now()
	require.NoError(t, d.RestoreSnapshot(ctx, sb.Name, "clean"))
	_, err = d.ReadGuestFile(ctx, sb.Name, "/root/marker")
	require.Error(t, err, "the file written after the snapshot is gone")
	res, err := d.GuestExec(ctx, sb.Name, "/bin/date", "+%s")
	require.NoError(t, err)
	guestNow, err := strconv.ParseInt(strings.TrimSpace(string(res.Stdout)), 10, 64)
	require.NoError(t, err)
	require.GreaterOrEqual(t, guestNow, before.Unix(), "guest clock not synced after the revert")

	t0 := time.Now()
	require.NoError(t, d.Stop(ctx, sb.Name))
	t.Logf("graceful stop: %v", time.Since(t0).Round(time.Millisecond))
	id := sandboxtest.Identity(t, sb.Name)
	t0 = time.Now()
	again, err := d.Start(ctx, sb.Name, id)
	require.NoError(t, err)
	t.Logf("cold boot to agent+identity+IP: %v", time.Since(t0).Round(time.Millisecond))
	require.False(t, again.Restored, "the second start cold-boots the overlay")
	require.Equal(t, sb.IP, again.IP)
	mid, err := d.ReadGuestFile(ctx, sb.Name, "/etc/machine-id")
	require.NoError(t, err)
	require.Equal(t, id.MachineID+"\n", string(mid))
}
