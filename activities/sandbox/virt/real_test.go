package virt_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/activities/sandbox/sandboxtest"
	"github.com/airlock-dev/airlock/activities/sandbox/virt"
)

const realImage = "bookworm"

// realDriver connects to qemu:///system, or skips (fails with CI=true)
// naming what is missing: libvirtd, the network, the pool or the image.
func realDriver(t *testing.T) *virt.Driver {
	t.Helper()
	missing := func(what string) {
		msg := "real VMs: " + what + " (run `make host image`)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if testing.Short() {
		t.Skip("real VMs: -short")
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
	d, err := virt.New(virt.Config{Logf: t.Logf})
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

func TestRealColdBoot(t *testing.T) {
	d := realDriver(t)
	ctx := realCtx(t)
	sb := createReal(t, d, sandbox.BootCold)
	t0 := time.Now()
	got, err := d.Start(ctx, sb.Name, sandboxtest.Identity(t, sb.Name))
	require.NoError(t, err)
	t.Logf("cold boot to agent+identity+IP: %v (%s at %s)", time.Since(t0).Round(time.Millisecond), got.Name, got.IP)
	require.False(t, got.Restored)
}
