package remote_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/remote"
)

// BenchmarkExecReused runs `true` over one pooled connection: the path
// every tool call takes.
func BenchmarkExecReused(b *testing.B) {
	_, bundle := setup(b)
	pool := remote.NewPool(bundle.dialer, remote.PoolOptions{})
	b.Cleanup(func() { pool.Close() })
	ctx := context.Background()
	_, err := pool.Get(ctx, bundle.target)
	require.NoError(b, err)

	for b.Loop() {
		c, err := pool.Get(ctx, bundle.target)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Exec(ctx, "true", remote.ExecOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(pool.Stats().Dials), "dials")
}

// BenchmarkExecNewConnection dials, runs `true` and closes each time: what
// reuse saves.
func BenchmarkExecNewConnection(b *testing.B) {
	_, bundle := setup(b)
	ctx := context.Background()
	for b.Loop() {
		c, err := bundle.dialer.Dial(ctx, bundle.target)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Exec(ctx, "true", remote.ExecOptions{}); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
