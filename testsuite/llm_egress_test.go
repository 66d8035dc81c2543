package testsuite

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/activities/sandbox/sandboxtest"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/worker"
)

// outside is an HTTP server "outside" this host: in a network namespace
// behind a veth pair. There is no internet here, so this is what egress is
// tested against: a sandbox reaches it only if the host forwards (and
// masquerades) its packets, which the nftables table allows only for
// sandboxes in egress_open. Host addresses stay unreachable either way.
type outside struct {
	URL  string
	Body string
	hits atomic.Int32
}

func startOutside(t *testing.T) *outside {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root (network namespaces)")
	}
	tag := randomHex(3)
	ns, hostIf, peer := "alk-egress-"+tag, "alkh"+tag, "alkp"+tag
	octet := int(tag[0])%200 + 20 // 198.18.0.0/15 is for network tests
	hostIP, nsIP := fmt.Sprintf("198.18.%d.1", octet), fmt.Sprintf("198.18.%d.2", octet)
	ip := func(args ...string) {
		t.Helper()
		out, err := exec.Command("ip", args...).CombinedOutput()
		require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip("link", "add", hostIf, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
	ip("link", "set", peer, "netns", ns)
	ip("addr", "add", hostIP+"/30", "dev", hostIf)
	ip("link", "set", hostIf, "up")
	ip("-n", ns, "addr", "add", nsIP+"/30", "dev", peer)
	ip("-n", ns, "link", "set", peer, "up")
	ip("-n", ns, "link", "set", "lo", "up")

	o := &outside{Body: "hello from outside " + tag}
	ln := listenInNetns(t, ns, nsIP+":0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		_, _ = io.WriteString(w, o.Body+"\n")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	o.URL = fmt.Sprintf("http://%s/", ln.Addr())
	return o
}

// listenInNetns opens a TCP listener inside a network namespace: the
// socket keeps the namespace it was made in. A locked OS thread switches
// in and back; if switching back fails, the thread is left locked and
// dies with its goroutine.
func listenInNetns(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		ln, lerr := net.Listen("tcp4", addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{ln: ln, err: fmt.Errorf("setns back: %w", err)}
			return // the thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		ch <- result{ln: ln, err: lerr}
	}()
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}

// requireOpenForward skips (or fails, with CI=true) unless airlock-sbx is
// the forward-mode-open network that deploy/host/setup.sh defines.
func requireOpenForward(t *testing.T) {
	t.Helper()
	out, err := exec.Command("virsh", "-q", "-c", "qemu:///system", "net-dumpxml", "airlock-sbx").Output()
	if err != nil || !strings.Contains(string(out), "<forward mode='open'") {
		Missing(t, "airlock-sbx with forward mode open (run make host; it restarts the network once no guest uses it)")
	}
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		Missing(t, "net.ipv4.ip_forward=1 (run make host)")
	}
}

// TestSandboxEgressGate: with egress closed a sandbox reaches neither the
// host's services (a listener on 0.0.0.0, tried at every host address)
// nor anything beyond the host, and has no DNS; with egress open (the
// sandbox's address in egress_open) it reaches the outside server but
// still not the host; closed again, the outside is unreachable again.
//
//	flock /tmp/airlock-vm.lock go test -run TestSandboxEgressGate ./testsuite/
func TestSandboxEgressGate(t *testing.T) {
	cfg := config.Default()
	RequirePath(t, "libvirt socket (make host)", "/run/libvirt/libvirt-sock")
	RequirePath(t, "golden image (make image)", filepath.Join(cfg.Images.CacheDir, "bookworm", "current", "disk.qcow2"))
	requireOpenForward(t)
	out := startOutside(t)

	hostLn, err := net.Listen("tcp4", "0.0.0.0:0")
	require.NoError(t, err)
	defer hostLn.Close()
	var hostHits atomic.Int32
	go func() {
		for {
			c, err := hostLn.Accept()
			if err != nil {
				return
			}
			hostHits.Add(1)
			c.Close()
		}
	}()
	port := hostLn.Addr().(*net.TCPAddr).Port

	drv, err := worker.NewDriver(cfg, "egress-"+randomHex(2), slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	t.Cleanup(func() { drv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	owner := "task-egress-" + randomHex(4)
	sb, err := drv.Create(ctx, sandbox.Spec{Owner: owner, Name: sandbox.NameFor(owner, ""), Image: "bookworm"})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		require.NoError(t, drv.Destroy(ctx, sb.Name))
	})
	_, err = drv.Start(ctx, sb.Name, sandboxtest.Identity(t, sb.Name))
	require.NoError(t, err)

	curl := func(url string) (int, string) {
		res, err := drv.GuestExec(ctx, sb.Name, "/usr/bin/curl", "-sS", "-m", "4", url)
		require.NoError(t, err)
		t.Logf("curl %s: exit %d %s%s", url, res.ExitCode, strings.TrimSpace(string(res.Stdout)), strings.TrimSpace(string(res.Stderr)))
		return res.ExitCode, string(res.Stdout)
	}
	hostAddrs := []string{}
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			hostAddrs = append(hostAddrs, ipn.IP.String())
		}
	}
	requireHostClosed := func() {
		for _, ip := range hostAddrs {
			code, _ := curl(fmt.Sprintf("http://%s:%d/", ip, port))
			require.Contains(t, []int{7, 28}, code, "the sandbox reached the host at %s", ip)
		}
	}

	// Closed (the default).
	code, _ := curl(out.URL)
	require.Equal(t, 28, code, "with egress closed, packets beyond the host are dropped")
	requireHostClosed()
	dns, err := drv.GuestExec(ctx, sb.Name, "/usr/bin/timeout", "8", "/usr/bin/getent", "hosts", "deb.debian.org")
	require.NoError(t, err)
	require.NotZero(t, dns.ExitCode, "no DNS with egress closed")

	// Open: the outside answers, the host still does not.
	require.NoError(t, drv.SetEgress(ctx, sb.Name, true))
	code, body := curl(out.URL)
	require.Zero(t, code, "with egress open the sandbox reaches the outside")
	require.Contains(t, body, out.Body)
	requireHostClosed()

	// Closed again.
	require.NoError(t, drv.SetEgress(ctx, sb.Name, false))
	code, _ = curl(out.URL)
	require.Equal(t, 28, code, "closed again")
	require.Zero(t, hostHits.Load(), "the host listener saw a connection from the sandbox")
	require.Equal(t, int32(1), out.hits.Load())
}
