package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/activities/hv"
	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/activities/sandbox/virt"
	"github.com/airlock-dev/airlock/config"
)

// sbxImage is the golden image every sandbox benchmark boots.
const sbxImage = "bookworm"

// sbxEnv is this machine as one hypervisor host: the libvirt driver with
// the worker's defaults (state dir included, so the host's fast-start
// template is shared with everything else), throw-away CAs, an SSH pool,
// and the hypervisor activities over them — the path CreateSandbox and
// Exec take in the worker, minus Temporal.
type sbxEnv struct {
	drv    *virt.Driver
	cas    *remote.CAs
	dialer *remote.Dialer
	acts   *hv.Activities
	runID  string
	phases *sbxPhaseLog

	mu      sync.Mutex
	created []string // every sandbox name handed out, destroyed at cleanup
}

// sbxSetup connects to qemu:///system or skips, naming what is missing.
// Every sandbox it creates is destroyed when the benchmark ends.
func sbxSetup(b *testing.B) *sbxEnv {
	b.Helper()
	cfg := config.Default()
	cache := os.Getenv("AIRLOCK_IMAGE_CACHE")
	if cache == "" {
		cache = cfg.Images.CacheDir
	}
	for _, f := range []string{"disk.qcow2", "vmlinuz", "initrd.img"} {
		if _, err := os.Stat(filepath.Join(cache, sbxImage, "current", f)); err != nil {
			sbxSkip(b, fmt.Sprintf("golden image %s has no %s under %s (run `make image`)", sbxImage, f, cache))
		}
	}
	if _, err := os.Stat("/run/libvirt/libvirt-sock"); err != nil {
		sbxSkip(b, "libvirtd is not running (no /run/libvirt/libvirt-sock; run `make host`)")
	}
	phases := &sbxPhaseLog{byName: map[string][]sbxPhase{}}
	drv, err := virt.New(virt.Config{
		URI: cfg.Hypervisor.URI, Network: cfg.Hypervisor.Network, DomainType: cfg.Hypervisor.DomainType,
		MemoryMiB: cfg.Hypervisor.MemoryMiB, ImageCache: cache,
		MaxSandboxes: 32, // room for BenchmarkDensity (the default config allows 8)
		Logf:         phases.logf,
	})
	if err != nil {
		sbxSkip(b, fmt.Sprintf("cannot connect to %s: %v", cfg.Hypervisor.URI, err))
	}
	b.Cleanup(func() { drv.Close() })
	if err := drv.CheckHost(); err != nil {
		sbxSkip(b, fmt.Sprintf("%v (run `make host`)", err))
	}
	cas, err := remote.LoadOrCreateCAs(b.TempDir())
	if err != nil {
		b.Fatalf("CAs: %v", err)
	}
	dialer := &remote.Dialer{CAs: cas}
	pool := remote.NewPool(dialer, remote.PoolOptions{})
	e := &sbxEnv{
		drv: drv, cas: cas, dialer: dialer, phases: phases, runID: sbxRandomHex(3),
		acts: &hv.Activities{Host: "bench", HV: drv, CAs: cas, Pool: pool, ReadyTimeout: 5 * time.Minute},
	}
	b.Cleanup(func() {
		pool.Close()
		e.destroyAll(b)
	})
	return e
}

// ensureTemplate builds the host's fast-start template if it is missing
// and says what it cost (once per image hash per host).
func (e *sbxEnv) ensureTemplate(b *testing.B) virt.Template {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	t, err := e.drv.EnsureTemplate(ctx, sbxImage)
	if err != nil {
		b.Fatalf("fast-start template: %v", err)
	}
	sbxPrint(b, fmt.Sprintf("template %s: ready after %v (built %s: boot %v, save %v)", sbxShort(t.Key),
		time.Since(t0).Round(time.Millisecond), t.Created.Local().Format("15:04:05"),
		t.BootTime.Round(time.Millisecond), t.SaveTime.Round(time.Millisecond)))
	return t
}

// sbxReady is one CreateSandbox call that ended with SSH working.
type sbxReady struct {
	Info  sandbox.Info
	Took  time.Duration // request to first SSH command OK
	Phase []sbxPhase    // the driver's phases, offsets from Start
}

// create runs the CreateSandbox activity (Create, Start or restore,
// identity, then `true` over SSH) for a new owner tagged tag.
func (e *sbxEnv) create(ctx context.Context, tag string, boot sandbox.BootPreference) (sbxReady, error) {
	owner := fmt.Sprintf("bench-%s-%s", e.runID, tag)
	name := sandbox.NameFor(owner, "")
	e.mu.Lock()
	e.created = append(e.created, name)
	e.mu.Unlock()
	t0 := time.Now()
	info, err := e.acts.CreateSandbox(ctx, sandbox.CreateInput{Owner: owner, Image: sbxImage, Boot: boot})
	took := time.Since(t0)
	if err != nil {
		return sbxReady{}, fmt.Errorf("create %s (%s): %w", name, boot, err)
	}
	return sbxReady{Info: info, Took: took, Phase: e.phases.take(name)}, nil
}

// destroy removes one sandbox and reports anything left behind.
func (e *sbxEnv) destroy(ctx context.Context, name string) error {
	if err := e.acts.DestroySandbox(ctx, name); err != nil {
		return fmt.Errorf("destroy %s: %w", name, err)
	}
	left, err := e.drv.Leftovers(ctx, name)
	if err != nil {
		return fmt.Errorf("leftovers of %s: %w", name, err)
	}
	if len(left) > 0 {
		return fmt.Errorf("destroy %s left %v", name, left)
	}
	return nil
}

func (e *sbxEnv) destroyAll(b *testing.B) {
	e.mu.Lock()
	names := slices.Clone(e.created)
	e.created = nil
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, name := range names {
		if err := e.destroy(ctx, name); err != nil {
			b.Errorf("cleanup: %v", err)
		}
	}
}

// sbxPhase is one line of the driver's Logf: what happened, how long after
// the start of the step (Start measures from its own beginning).
type sbxPhase struct {
	What  string
	After time.Duration
}

// sbxPhaseLog collects the driver's "<name>: <what> <duration>" lines.
type sbxPhaseLog struct {
	mu     sync.Mutex
	byName map[string][]sbxPhase
}

func (l *sbxPhaseLog) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	name, rest, ok := strings.Cut(line, ": ")
	if !ok {
		return
	}
	i := strings.LastIndexByte(rest, ' ')
	if i < 0 {
		return
	}
	d, err := time.ParseDuration(rest[i+1:])
	if err != nil {
		return
	}
	what := rest[:i]
	if strings.HasPrefix(what, "reserved ") || strings.HasPrefix(what, "guest has ") {
		what = strings.Fields(what)[0] // drop the IP: phases line up across sandboxes
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byName[name] = append(l.byName[name], sbxPhase{What: what, After: d})
}

func (l *sbxPhaseLog) take(name string) []sbxPhase {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.byName[name]
	delete(l.byName, name)
	return p
}

// sbxMedian is the median of ds (the mean of the middle two for an even
// count); zero for none.
func sbxMedian(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// sbxRange formats min–max of ds.
func sbxRange(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	return fmt.Sprintf("%v–%v", sbxRound(slices.Min(ds)), sbxRound(slices.Max(ds)))
}

// sbxRound keeps three significant digits or so, for tables.
func sbxRound(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func sbxRatio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// sbxTable renders rows as aligned columns (the first row is the header).
func sbxTable(rows [][]string) string {
	width := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var sb strings.Builder
	for _, r := range rows {
		sb.WriteString("\n  ")
		for i, c := range r {
			sb.WriteString(c)
			if i < len(r)-1 {
				sb.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+2))
			}
		}
	}
	return sb.String()
}

// sbxSkip skips for a missing prerequisite, saying so on stdout too:
// without -v a skipped benchmark is silent.
func sbxSkip(b *testing.B, why string) {
	b.Helper()
	sbxPrint(b, "skipped, real VMs: "+why)
	b.Skip("real VMs: " + why)
}

// sbxPrint writes a report to stdout under the benchmark's name: b.Log
// output of benchmarks is cut after ten lines.
func sbxPrint(b *testing.B, report string) {
	fmt.Printf("\n=== %s\n%s\n", b.Name(), strings.TrimLeft(report, "\n"))
}

func sbxShort(key string) string {
	if len(key) > 21 {
		return key[:21]
	}
	return key
}

func sbxRandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}
