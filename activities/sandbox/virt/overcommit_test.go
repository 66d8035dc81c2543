package virt

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// TestOvercommitOnlyWhenApproved: a sandbox bigger than the free memory is
// refused with a CapacityError and leaves nothing behind, unless the spec
// carries a human's overcommit approval.
func TestOvercommitOnlyWhenApproved(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	c, err := d.Capacity(ctx)
	require.NoError(t, err)
	huge := int(c.FreeMemoryMiB) + 1024

	_, err = d.Create(ctx, sandbox.Spec{Owner: "task-big", Image: TestImage, MemoryMiB: huge})
	var ce *sandbox.CapacityError
	require.True(t, errors.As(err, &ce), "got %v", err)
	left, err := d.Leftovers(ctx, sandbox.NameFor("task-big", ""))
	require.NoError(t, err)
	require.Empty(t, left)

	sb, err := d.Create(ctx, sandbox.Spec{Owner: "task-big", Image: TestImage, MemoryMiB: huge, Overcommit: true})
	require.NoError(t, err)
	require.Equal(t, sandbox.NameFor("task-big", ""), sb.Name)
	require.NoError(t, d.Destroy(ctx, sb.Name))
}
