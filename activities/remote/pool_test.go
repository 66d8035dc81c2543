package remote_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/remote/remotetest"
)

func TestPool(t *testing.T) {
	ctx := context.Background()

	setupPool := func(t *testing.T) (*remote.Pool, *testBundle) {
		t.Helper()
		client, bundle := setup(t)
		client.Close() // the pool dials its own
		pool := remote.NewPool(bundle.dialer, remote.PoolOptions{})
		t.Cleanup(func() { pool.Close() })
		return pool, bundle
	}

	t.Run("ReusesConnection", func(t *testing.T) {
		pool, bundle := setupPool(t)
		first, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		require.Equal(t, "1\n", run(t, first, "echo 1").Stdout.String())

		second, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		require.Same(t, first, second)
		require.Equal(t, "2\n", run(t, second, "echo 2").Stdout.String())
		require.Equal(t, remote.PoolStats{Dials: 1, Reuses: 1}, pool.Stats())
	})

	t.Run("RedialsAfterDrop", func(t *testing.T) {
		pool, bundle := setupPool(t)
		first, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)

		pool.Drop(bundle.target.Name)
		<-first.Done()
		_, err = first.Exec(ctx, "true", remote.ExecOptions{})
		require.ErrorIs(t, err, remote.ErrClosed)

		second, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		require.NotSame(t, first, second)
		require.Equal(t, "ok\n", run(t, second, "echo ok").Stdout.String())
		require.EqualValues(t, 2, pool.Stats().Dials)
	})

	t.Run("RedialsDeadConnection", func(t *testing.T) {
		pool, bundle := setupPool(t)
		first, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		first.Close()
		<-first.Done()

		second, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		require.NotSame(t, first, second)
		require.True(t, second.Alive())
		require.EqualValues(t, 2, pool.Stats().Dials)
	})

	t.Run("RedialsBeforeCertificateExpiry", func(t *testing.T) {
		pool, bundle := setupPool(t)
		first, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)

		// 61 s before expiry: still reused.
		remote.SetPoolClock(pool, func() time.Time { return first.CertExpiry().Add(-61 * time.Second) })
		again, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		require.Same(t, first, again)

		// 59 s before expiry: renewed.
		remote.SetPoolClock(pool, func() time.Time { return first.CertExpiry().Add(-59 * time.Second) })
		second, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		require.NotSame(t, first, second)
		require.Equal(t, remote.PoolStats{Dials: 2, Reuses: 1}, pool.Stats())
		// The old connection is retired gracefully: a caller holding it
		// can still finish its command.
		require.Equal(t, "old\n", run(t, first, "echo old").Stdout.String())
	})

	t.Run("RedialsWhenAddressChanges", func(t *testing.T) {
		pool, bundle := setupPool(t)
		first, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)

		// Same sandbox, now at another address (e.g. a new DHCP lease).
		moved := remotetest.Start(t, remotetest.Config{CAs: bundle.cas, Principal: bundle.target.Name})
		target := bundle.target
		target.Addr = moved.Addr
		second, err := pool.Get(ctx, target)
		require.NoError(t, err)
		require.NotSame(t, first, second)
		require.Equal(t, moved.Addr, second.Addr())
	})

	t.Run("ConcurrentGetsShareOneDial", func(t *testing.T) {
		pool, bundle := setupPool(t)
		const n = 8
		clients := make([]*remote.Client, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { clients[i], errs[i] = pool.Get(ctx, bundle.target) })
		}
		wg.Wait()
		for i := range n {
			require.NoError(t, errs[i])
			require.Same(t, clients[0], clients[i])
		}
		require.Equal(t, remote.PoolStats{Dials: 1, Reuses: n - 1}, pool.Stats())
	})

	t.Run("SeparateSandboxesSeparateConnections", func(t *testing.T) {
		pool, bundle := setupPool(t)
		other := remotetest.Start(t, remotetest.Config{CAs: bundle.cas, Principal: "sbx-other"})
		a, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		b, err := pool.Get(ctx, remote.Target{Name: "sbx-other", Addr: other.Addr})
		require.NoError(t, err)
		require.NotSame(t, a, b)
		require.Equal(t, "sbx-other", b.Name())
	})

	t.Run("DialErrorNotCached", func(t *testing.T) {
		pool, bundle := setupPool(t)
		target := bundle.target
		target.Name = "sbx-wrong" // host cert says sbx-test
		_, err := pool.Get(ctx, target)
		require.ErrorIs(t, err, remote.ErrHostKey)
		c, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		require.True(t, c.Alive())
	})

	t.Run("ProbesIdleConnectionBeforeReuse", func(t *testing.T) {
		client, bundle := setup(t)
		client.Close()
		// Every Get finds the connection idle and sends a keepalive first.
		pool := remote.NewPool(bundle.dialer, remote.PoolOptions{IdleCheck: time.Nanosecond})
		t.Cleanup(func() { pool.Close() })
		first, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		second, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		require.Same(t, first, second)
		require.Equal(t, remote.PoolStats{Dials: 1, Reuses: 1}, pool.Stats())
	})

	t.Run("ClosedPool", func(t *testing.T) {
		pool, bundle := setupPool(t)
		c, err := pool.Get(ctx, bundle.target)
		require.NoError(t, err)
		require.NoError(t, pool.Close())
		<-c.Done()
		_, err = pool.Get(ctx, bundle.target)
		require.ErrorIs(t, err, remote.ErrClosed)
	})
}
