package virt_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/activities/sandbox/sandboxtest"
	"github.com/airlock-dev/airlock/activities/sandbox/virt"
)

// newTestDriver is a Driver on libvirt's test driver with fresh state.
func newTestDriver(t *testing.T) *virt.Driver {
	t.Helper()
	cfg, err := virt.TestConfig(t.TempDir())
	require.NoError(t, err)
	d, err := virt.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func TestConformanceTestDriver(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) sandbox.Hypervisor { return newTestDriver(t) },
		sandboxtest.Caps{Image: virt.TestImage, Boot: true})
}

func TestCapacityCountsDefinedSandboxes(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	c0, err := d.Capacity(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(8192), c0.TotalMemoryMiB)
	assert.Equal(t, 2, c0.VCPUs)
	assert.Equal(t, 4, c0.MaxSandboxes)

	var names []string
	for i := 0; i < 4; i++ {
		sb, err := d.Create(ctx, sandbox.Spec{Owner: sandboxtest.Owner(t), Image: virt.TestImage, MemoryMiB: 256})
		require.NoError(t, err)
		names = append(names, sb.Name)
	}
	c1, err := d.Capacity(ctx)
	require.NoError(t, err)
	assert.Equal(t, c0.FreeMemoryMiB-4*256, c1.FreeMemoryMiB)

	owner := sandboxtest.Owner(t)
	_, err = d.Create(ctx, sandbox.Spec{Owner: owner, Image: virt.TestImage, MemoryMiB: 256})
	var ce *sandbox.CapacityError
	require.ErrorAs(t, err, &ce, "max sandboxes reached")
	assert.Contains(t, ce.Reason, "4 of 4")
	left, err := d.Leftovers(ctx, sandbox.NameFor(owner, ""))
	require.NoError(t, err)
	assert.Empty(t, left)
	for _, n := range names {
		require.NoError(t, d.Destroy(ctx, n))
	}
}
