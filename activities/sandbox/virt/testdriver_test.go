package virt_test

import (
	"context"
	"sync"
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

// TestConcurrentCreates: concurrent Creates for one owner make one
// sandbox; for different owners, distinct addresses.
func TestConcurrentCreates(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	owner := sandboxtest.Owner(t)
	got := make([]sandbox.Sandbox, 6)
	errs := make([]error, 6)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := owner
			if i >= 3 {
				o = sandboxtest.Owner(t)
			}
			got[i], errs[i] = d.Create(ctx, sandbox.Spec{Owner: o, Image: virt.TestImage})
		}()
	}
	wg.Wait()
	ips := map[string]bool{}
	for i := range got {
		require.NoError(t, errs[i])
		ips[got[i].IP] = true
		if i > 0 && i < 3 {
			assert.Equal(t, got[0], got[i], "same owner, same sandbox")
		}
	}
	assert.Len(t, ips, 4, "one address per sandbox")
	list, err := d.List(ctx)
	require.NoError(t, err)
	assert.Len(t, list, 4)
}
