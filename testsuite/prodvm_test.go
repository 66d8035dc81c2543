package testsuite

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"libvirt.org/go/libvirt"

	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/worker"
)

// TestProdVMAnswersAfterPowerOff: prod-web-1 is a server, so after its VM
// is powered off (or the hypervisor host reboots) and started again, it
// answers SSH with the pinned host key, as the apply worker expects.
func TestProdVMAnswersAfterPowerOff(t *testing.T) {
	cfg := config.Default()
	RequirePath(t, "libvirt socket (make host)", "/run/libvirt/libvirt-sock")
	RequirePath(t, "golden image (make image)", filepath.Join(cfg.Images.CacheDir, "bookworm", "current", "disk.qcow2"))
	drv, err := worker.NewDriver(cfg, "prodvm-"+randomHex(3), slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	t.Cleanup(func() { drv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	vm, err := worker.EnsureProdVM(ctx, cfg.StateDir, drv)
	require.NoError(t, err)
	requireProdSSH(t, vm)

	conn, err := libvirt.NewConnect("qemu:///system")
	require.NoError(t, err)
	defer conn.Close()
	dom, err := conn.LookupDomainByName(worker.ProdName)
	require.NoError(t, err)
	defer dom.Free()
	require.NoError(t, dom.Destroy(), "power off %s", worker.ProdName)

	vm, err = worker.EnsureProdVM(ctx, cfg.StateDir, drv)
	require.NoError(t, err)
	requireProdSSH(t, vm)
}

// requireProdSSH logs in the way Ansible does: the apply worker's key, the
// pinned known_hosts and nothing else.
func requireProdSSH(t *testing.T, vm worker.ProdVM) {
	t.Helper()
	out, err := exec.Command("ssh", "-i", vm.Key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+vm.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "ConnectTimeout=20",
		"root@"+vm.IP, "hostname").CombinedOutput()
	require.NoError(t, err, "ssh root@%s: %s", vm.IP, out)
	require.Equal(t, worker.ProdName, strings.TrimSpace(string(out)))
}
