package virt

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	cfg, err := TestConfig(t.TempDir())
	require.NoError(t, err)
	d, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// TestReconcileSweepsDebrisOnly: Reconcile removes sandboxes of dead owners
// and debris of interrupted creates (an overlay, a DHCP reservation, an
// egress entry without a sandbox), and never touches other domains.
func TestReconcileSweepsDebrisOnly(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	conn, err := d.connect()
	require.NoError(t, err)

	live, err := d.Create(ctx, sandbox.Spec{Owner: "task-live", Image: TestImage})
	require.NoError(t, err)
	dead, err := d.Create(ctx, sandbox.Spec{Owner: "task-dead", Image: TestImage})
	require.NoError(t, err)
	require.NoError(t, d.SetEgress(ctx, dead.Name, true))

	// Debris of a create that died between its steps.
	_, err = d.createOverlay(conn, "sbx-crashed.qcow2", "/base.qcow2")
	require.NoError(t, err)
	_, err = d.reserveIP(conn, d.cfg.Network, "sbx-crashed2", newMAC())
	require.NoError(t, err)
	require.NoError(t, d.cfg.Firewall.Open(ctx, "10.77.0.240"))

	destroyed, err := d.Reconcile(ctx, func(owner string) (bool, error) { return owner == "task-live", nil })
	require.NoError(t, err)
	assert.Equal(t, []string{"sbx-crashed", "sbx-crashed2", dead.Name}, destroyed, "sorted")
	for _, n := range destroyed {
		left, err := d.Leftovers(ctx, n)
		require.NoError(t, err)
		assert.Empty(t, left, n)
	}
	open, err := d.cfg.Firewall.ListOpen(ctx)
	require.NoError(t, err)
	assert.Empty(t, open, "stray egress entries are closed")
	_, err = d.Get(ctx, live.Name)
	assert.NoError(t, err)
	for _, foreign := range []string{TestForeignDomain, TestUnmanagedSbx} {
		dom, err := conn.LookupDomainByName(foreign)
		require.NoError(t, err, "%s must survive", foreign)
		active, _ := dom.IsActive()
		assert.True(t, active, "%s keeps running", foreign)
		dom.Free()
	}
	assert.ErrorIs(t, d.Destroy(ctx, TestUnmanagedSbx), sandbox.ErrBadInput, "Destroy refuses a domain without Airlock metadata")

	list, err := d.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, live.Name, list[0].Name)
}

// TestCreateClearsDebris: a retried Create after a crash between its steps
// (overlay made, domain not defined) succeeds.
func TestCreateClearsDebris(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	conn, err := d.connect()
	require.NoError(t, err)
	name := sandbox.NameFor("task-retry", "")
	_, err = d.createOverlay(conn, name+".qcow2", "/base.qcow2")
	require.NoError(t, err)
	_, err = d.reserveIP(conn, d.cfg.Network, name, newMAC())
	require.NoError(t, err)
	sb, err := d.Create(ctx, sandbox.Spec{Owner: "task-retry", Image: TestImage})
	require.NoError(t, err)
	res, err := d.reservations(conn, d.cfg.Network)
	require.NoError(t, err)
	require.Len(t, res[name], 1, "one reservation, the new one")
	assert.Equal(t, sb.MAC, res[name][0].MAC)
}

// TestReconnect: a dropped connection is re-opened on the next call.
func TestReconnect(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	_, err := d.Capacity(ctx)
	require.NoError(t, err)
	d.connMu.Lock()
	_, err = d.conn.Close()
	d.connMu.Unlock()
	require.NoError(t, err)
	_, err = d.Capacity(ctx)
	require.NoError(t, err, "the driver reconnects")
}

// TestStartRequiresTemplate: BootRestore without a template is
// ErrNoTemplate, and nothing is left behind.
func TestStartRequiresTemplate(t *testing.T) {
	d := newTestDriver(t)
	ctx := context.Background()
	_, err := d.Create(ctx, sandbox.Spec{Owner: "task-t", Image: TestImage, Boot: sandbox.BootRestore})
	require.ErrorIs(t, err, sandbox.ErrNoTemplate)
	left, err := d.Leftovers(ctx, sandbox.NameFor("task-t", ""))
	require.NoError(t, err)
	assert.Empty(t, left)
}
