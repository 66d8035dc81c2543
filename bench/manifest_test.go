// Package bench holds benchmarks that boot real VMs and print manifestFigures and
// same-run ratios (DESIGN.md §8). Nothing here asserts a timing. Run them
// under the machine-wide VM lock:
//
//	flock /tmp/airlock-vm.lock go test -run '^$' -bench . -benchtime 5x ./bench/
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/activities/hv"
	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/testsuite"
	"github.com/airlock-dev/airlock/worker"
)

// manifestFigures are measured once per process: the VM work is minutes long, so
// it is not repeated b.N times. The benchmark loop itself times the
// host-side Diff of the two manifests, which is cheap and repeatable.
type manifestFigures struct {
	entries                     int
	noCache, cached             time.Duration
	noCacheHashed, cachedHashed int
	final, capture              time.Duration
	finalHashed                 int
	hostDiff                    time.Duration
	virtDiff                    time.Duration
	virtDiffLines               int
	virtDiffErr                 string
	disks                       [2]string
	base, after                 *changes.Manifest
	changed                     int // file changes in the classified diff
	lines                       []string
	printed                     bool
}

var (
	manifestOnce   sync.Once
	manifestResult *manifestFigures
	manifestErr    error
)

// BenchmarkManifestDiff: the time to take a manifest of a fresh
// golden-image sandbox with and without the host's image-baseline cache,
// the incremental manifest and capture after a small change, the
// host-side Diff, and virt-diff on the same pair of disks, with ratios.
func BenchmarkManifestDiff(b *testing.B) {
	manifestOnce.Do(func() { manifestResult, manifestErr = measureManifest(b) })
	require.NoError(b, manifestErr)
	if manifestResult == nil {
		b.Skip("not measured (see the first run's skip message)")
	}
	f := manifestResult
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		changes.Diff(f.base, f.after, changes.DiffOptions{})
	}
	b.StopTimer()
	perDiff := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(f.cached.Seconds(), "s/manifest-cached")
	b.ReportMetric(f.noCache.Seconds(), "s/manifest-uncached")
	b.ReportMetric(float64(f.entries)/perDiff.Seconds(), "files/s-hostdiff")
	if f.virtDiff > 0 {
		b.ReportMetric(f.virtDiff.Seconds(), "s/virt-diff")
	}
	if f.printed {
		return
	}
	f.printed = true
	fmt.Fprintf(os.Stderr, "\n%s\n  host-side Diff (b.N=%d): %s per diff, %.0f files/s\n\n",
		strings.Join(f.lines, "\n"), b.N, perDiff.Round(time.Microsecond), float64(f.entries)/perDiff.Seconds())
}

func measureManifest(b *testing.B) (*manifestFigures, error) {
	cfg := config.Default()
	testsuite.RequirePath(b, "libvirt socket (make host)", "/run/libvirt/libvirt-sock")
	testsuite.RequirePath(b, "golden image (make image)", filepath.Join(cfg.Images.CacheDir, "bookworm", "current", "disk.qcow2"))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()

	host := "bench-" + fmt.Sprint(os.Getpid())
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	drv, err := worker.NewDriver(cfg, host, logger)
	if err != nil {
		return nil, err
	}
	defer drv.Close()
	if _, err := drv.EnsureTemplate(ctx, "bookworm"); err != nil {
		b.Logf("no fast-start template, the sandbox cold-boots: %v", err)
	}
	cas, err := remote.LoadOrCreateCAs(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	pool := remote.NewPool(&remote.Dialer{CAs: cas}, remote.PoolOptions{})
	defer pool.Close()
	// A private cache directory: the first manifest is honestly uncached
	// and the host's real cache is left alone.
	cacheDir := b.TempDir()
	acts := &hv.Activities{Host: host, HV: drv, CAs: cas, Pool: pool, Artifacts: &hv.MemArtifacts{},
		Baselines: &hv.ImageBaselines{Dir: cacheDir, ImageCache: cfg.Images.CacheDir}}

	owner := fmt.Sprintf("bench-manifest-%d", os.Getpid())
	sbx, err := acts.CreateSandbox(ctx, sandbox.CreateInput{Owner: owner, Image: "bookworm"})
	if err != nil {
		return nil, fmt.Errorf("create sandbox: %w", err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer dcancel()
		if err := acts.DestroySandbox(dctx, sbx.Name); err != nil {
			b.Logf("destroy %s: %v", sbx.Name, err)
		}
	}()
	f := &manifestFigures{}

	start := time.Now()
	first, err := acts.TakeManifest(ctx, sandbox.ManifestInput{Sandbox: sbx.Name})
	if err != nil {
		return nil, fmt.Errorf("uncached manifest: %w", err)
	}
	f.noCache, f.noCacheHashed, f.entries = time.Since(start), first.Hashed, first.Entries
	start = time.Now()
	base, err := acts.TakeManifest(ctx, sandbox.ManifestInput{Sandbox: sbx.Name})
	if err != nil {
		return nil, fmt.Errorf("cached manifest: %w", err)
	}
	f.cached, f.cachedHashed = time.Since(start), base.Hashed

	// A small change: a config file, a directory with a page, a user.
	for _, w := range []sandbox.WriteFileInput{
		{Path: "/etc/bench/app.conf", Content: []byte("listen = 8081\nworkers = 2\n"), Mode: 0o644},
		{Path: "/srv/bench/index.html", Content: []byte("<h1>bench</h1>\n"), Mode: 0o644},
	} {
		w.Sandbox = sbx.Name
		if _, err := acts.WriteFile(ctx, w); err != nil {
			return nil, err
		}
	}
	if res, err := acts.Exec(ctx, sandbox.ExecInput{Sandbox: sbx.Name, Script: "useradd --system benchsvc && sed -i 's/^#MaxAuthTries 6$/MaxAuthTries 4/' /etc/ssh/sshd_config", Timeout: time.Minute}); err != nil || res.ExitCode != 0 {
		return nil, fmt.Errorf("change: %v %s", err, res.Output)
	}

	start = time.Now()
	final, err := acts.TakeManifest(ctx, sandbox.ManifestInput{Sandbox: sbx.Name, BaselineRef: base.Ref})
	if err != nil {
		return nil, fmt.Errorf("final manifest: %w", err)
	}
	f.final, f.finalHashed = time.Since(start), final.Hashed
	start = time.Now()
	capt, err := acts.CaptureChanges(ctx, sandbox.CaptureInput{Sandbox: sbx.Name, BeforeRef: base.Ref, AfterRef: final.Ref, BeforeFilesRef: base.FilesRef})
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	f.capture = time.Since(start)
	f.changed = capt.Summary["files_added"] + capt.Summary["files_modified"] + capt.Summary["files_removed"]
	if f.base, err = loadManifest(ctx, acts, base.Ref); err != nil {
		return nil, err
	}
	if f.after, err = loadManifest(ctx, acts, final.Ref); err != nil {
		return nil, err
	}
	start = time.Now()
	changes.Diff(f.base, f.after, changes.DiffOptions{})
	f.hostDiff = time.Since(start)

	f.virtDiffRun(ctx, b, acts, cfg, sbx.Name)
	f.report()
	return f, nil
}

func loadManifest(ctx context.Context, acts *hv.Activities, ref string) (*changes.Manifest, error) {
	raw, err := acts.Artifacts.ReadArtifact(ctx, ref)
	if err != nil {
		return nil, err
	}
	var m changes.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	return &m, nil
}

// virtDiffRun stops the sandbox and runs virt-diff between the disk the
// sandbox was cloned from (the template's disk, or the golden image for a
// cold boot) and the sandbox's overlay: the same before/after pair the
// manifests describe.
func (f *manifestFigures) virtDiffRun(ctx context.Context, b *testing.B, acts *hv.Activities, cfg config.Config, name string) {
	bin, err := exec.LookPath("virt-diff")
	if err != nil {
		f.virtDiffErr = "virt-diff not installed (apt-get install libguestfs-tools; it also needs a kernel in /boot, e.g. linux-image-cloud-amd64)"
		return
	}
	if err := acts.HV.Stop(ctx, name); err != nil {
		f.virtDiffErr = "stop sandbox: " + err.Error()
		return
	}
	overlay := filepath.Join(cfg.StateDir, "disks", name+".qcow2")
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "-U", "--output=json", overlay).Output()
	if err != nil {
		f.virtDiffErr = fmt.Sprintf("qemu-img info %s: %v", overlay, err)
		return
	}
	var info struct {
		Backing string `json:"full-backing-filename"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Backing == "" {
		f.virtDiffErr = fmt.Sprintf("no backing file for %s: %v", overlay, err)
		return
	}
	f.disks = [2]string{info.Backing, overlay}
	cmd := exec.CommandContext(ctx, bin, "-a", info.Backing, "-A", overlay)
	cmd.Env = append(os.Environ(), "LIBGUESTFS_BACKEND=direct", "LIBGUESTFS_BACKEND_SETTINGS=force_tcg")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	f.virtDiff = time.Since(start)
	f.virtDiffLines = strings.Count(stdout.String(), "\n")
	if err != nil {
		f.virtDiffErr = fmt.Sprintf("virt-diff: %v: %s", err, lastLineOf(stderr.String()))
		f.virtDiff = 0
	}
	b.Logf("virt-diff output (%d lines), first lines:\n%s", f.virtDiffLines, headLines(stdout.String(), 15))
}

func (f *manifestFigures) report() {
	rate := func(d time.Duration) float64 { return float64(f.entries) / d.Seconds() }
	both := f.cached + f.final + f.capture
	l := []string{
		fmt.Sprintf("manifest of a fresh golden-image sandbox (%d entries, in-guest over SSH, TCG):", f.entries),
		fmt.Sprintf("  without image-baseline cache: %6.1f s  %7.0f files/s  (%d files hashed)", f.noCache.Seconds(), rate(f.noCache), f.noCacheHashed),
		fmt.Sprintf("  with image-baseline cache:    %6.1f s  %7.0f files/s  (%d files hashed)   %.1fx faster", f.cached.Seconds(), rate(f.cached), f.cachedHashed, f.noCache.Seconds()/f.cached.Seconds()),
		fmt.Sprintf("after a small change (%d file changes, a user, one sshd_config line):", f.changed),
		fmt.Sprintf("  incremental manifest:         %6.1f s  %7.0f files/s  (%d files hashed)", f.final.Seconds(), rate(f.final), f.finalHashed),
		fmt.Sprintf("  capture (diff + contents):    %6.1f s", f.capture.Seconds()),
		fmt.Sprintf("  host-side Diff alone:         %6.3f s  %7.0f files/s", f.hostDiff.Seconds(), rate(f.hostDiff)),
		fmt.Sprintf("  both manifests + diff:        %6.1f s  (cached baseline + incremental + capture)", both.Seconds()),
	}
	if f.virtDiff > 0 {
		l = append(l,
			fmt.Sprintf("virt-diff (libguestfs, force_tcg) %s vs %s: %.1f s, %d lines of output", filepath.Base(f.disks[0]), filepath.Base(f.disks[1]), f.virtDiff.Seconds(), f.virtDiffLines),
			fmt.Sprintf("  ratio virt-diff / (both manifests + diff): %.1fx", f.virtDiff.Seconds()/both.Seconds()),
			fmt.Sprintf("  ratio virt-diff / (incremental manifest + capture): %.1fx", f.virtDiff.Seconds()/(f.final+f.capture).Seconds()),
			fmt.Sprintf("  ratio virt-diff / host-side Diff alone: %.0fx", f.virtDiff.Seconds()/f.hostDiff.Seconds()))
	} else {
		l = append(l, "virt-diff: not measured: "+f.virtDiffErr)
	}
	f.lines = l
}

func lastLineOf(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func headLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
