package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// densityDefault is how many idle sandboxes BenchmarkDensity boots unless
// AIRLOCK_BENCH_DENSITY says otherwise: enough to see the per-sandbox
// cost, modest enough for a shared 2-core machine.
const densityDefault = 6

// densityIdleWindow is how long the idle CPU use of the sandboxes is
// observed once they are all up (a measurement window, not a wait).
const densityIdleWindow = 5 * time.Second

// BenchmarkDensity boots K sandboxes (restored from the host's template,
// one after the other) and leaves them idle, then reports each one's qemu
// RSS (from /proc/<pid>/status), the host's available memory before and
// after, their idle CPU use, and how many idle sandboxes would fit by
// each measure. Every b.Loop iteration re-samples RSS and checks that each
// sandbox still answers over SSH. All of them are destroyed at the end.
func BenchmarkDensity(b *testing.B) {
	e := sbxSetup(b)
	t := e.ensureTemplate(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	k := densityDefault
	if v := os.Getenv("AIRLOCK_BENCH_DENSITY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("AIRLOCK_BENCH_DENSITY=%q: want a positive count", v)
		}
		k = n
	}
	capBefore, err := e.drv.Capacity(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if fit := int(capBefore.FreeMemoryMiB / int64(t.MemoryMiB)); k > fit {
		sbxPrint(b, fmt.Sprintf("only %d sandboxes of %d MiB fit the driver's free memory (%d MiB): K=%d", fit, t.MemoryMiB, capBefore.FreeMemoryMiB, fit))
		k = fit
	}
	if k < 1 {
		sbxSkip(b, fmt.Sprintf("no room for a sandbox (%d MiB free by the driver's account)", capBefore.FreeMemoryMiB))
	}
	availBefore, err := densityMemAvailableMiB()
	if err != nil {
		b.Fatal(err)
	}

	var infos []sandbox.Info
	var ready []time.Duration
	for i := range k {
		r, err := e.create(ctx, fmt.Sprintf("d%d", i), sandbox.BootAuto)
		if err != nil {
			b.Fatalf("sandbox %d of %d: %v", i+1, k, err)
		}
		infos, ready = append(infos, r.Info), append(ready, r.Took)
	}
	availAfter, err := densityMemAvailableMiB()
	if err != nil {
		b.Fatal(err)
	}
	cpu0, t0 := densityCPU(b, infos), time.Now()
	select { // observe them idle
	case <-time.After(densityIdleWindow):
	case <-ctx.Done():
		b.Fatal(ctx.Err())
	}
	cpu1, window := densityCPU(b, infos), time.Since(t0)

	var rss []densityRSS
	for b.Loop() {
		for _, info := range infos {
			c, err := e.acts.Pool.Get(ctx, remote.Target{Name: info.Name, Addr: info.IP})
			if err == nil {
				err = sshCheck(c.Exec(ctx, "true", remote.ExecOptions{}))
			}
			if err != nil {
				b.Fatalf("%s no longer answers: %v", info.Name, err)
			}
		}
		rss = densitySample(b, infos)
	}
	capAfter, err := e.drv.Capacity(ctx)
	if err != nil {
		b.Fatal(err)
	}
	sbxPrint(b, densityReport(k, t.MemoryMiB, infos, ready, rss, cpu0, cpu1, window, availBefore, availAfter, capAfter))
	var total int64
	for _, r := range rss {
		total += r.RSSKiB
	}
	b.ReportMetric(float64(total)/float64(len(rss))/1024, "rss-MiB/sandbox")
	b.ReportMetric(float64(availBefore-availAfter)/float64(k), "host-MiB/sandbox")
	b.ReportMetric(0, "ns/op")
}

func densityReport(k, memMiB int, infos []sandbox.Info, ready []time.Duration, rss []densityRSS,
	cpu0, cpu1 []time.Duration, window time.Duration, availBefore, availAfter int64, capAfter sandbox.Capacity) string {
	rows := [][]string{{"sandbox", "ready", "qemu RSS", "anon", "file", "idle CPU"}}
	var total, anon int64
	for i, info := range infos {
		r := rss[i]
		total += r.RSSKiB
		anon += r.AnonKiB
		rows = append(rows, []string{info.Name, sbxRound(ready[i]).String(), densityMiB(r.RSSKiB), densityMiB(r.AnonKiB), densityMiB(r.FileKiB),
			fmt.Sprintf("%.1f%%", 100*float64(cpu1[i]-cpu0[i])/float64(window))})
	}
	perRSS := float64(total) / float64(k) / 1024
	perHost := float64(availBefore-availAfter) / float64(k)
	out := fmt.Sprintf("density: %d idle sandboxes of %d MiB, restored one after the other:%s", k, memMiB, sbxTable(rows))
	out += fmt.Sprintf("\n  qemu RSS: mean %.0f MiB (anon %.0f MiB), total %.0f MiB", perRSS, float64(anon)/float64(k)/1024, float64(total)/1024)
	out += fmt.Sprintf("\n  host MemAvailable: %d MiB before, %d MiB after: %.0f MiB per sandbox", availBefore, availAfter, perHost)
	fit := func(per float64) string {
		if per <= 0 {
			return "-"
		}
		return fmt.Sprint(int(float64(availBefore-1024) / per))
	}
	out += fmt.Sprintf("\n  idle sandboxes that would fit in the %d MiB available before (minus 1 GiB reserve): %s by host memory used, %s by qemu RSS",
		availBefore, fit(perHost), fit(perRSS))
	out += fmt.Sprintf("\n  the driver's admission (%d MiB committed per sandbox): %d more now, %d defined at most (MaxSandboxes)",
		memMiB, capAfter.FreeMemoryMiB/int64(memMiB), capAfter.MaxSandboxes)
	return out
}

type densityRSS struct{ RSSKiB, AnonKiB, FileKiB int64 }

// densityPID is the qemu process of a running domain (libvirt's pid file).
func densityPID(b *testing.B, name string) int {
	b.Helper()
	s, err := os.ReadFile("/run/libvirt/qemu/" + name + ".pid")
	if err != nil {
		b.Fatalf("qemu pid of %s: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(s)))
	if err != nil {
		b.Fatalf("qemu pid of %s: %v", name, err)
	}
	return pid
}

func densitySample(b *testing.B, infos []sandbox.Info) []densityRSS {
	b.Helper()
	out := make([]densityRSS, 0, len(infos))
	for _, info := range infos {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", densityPID(b, info.Name)))
		if err != nil {
			b.Fatalf("qemu of %s: %v", info.Name, err)
		}
		var r densityRSS
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			key, val, _ := strings.Cut(sc.Text(), ":")
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
			switch key {
			case "VmRSS":
				r.RSSKiB = n
			case "RssAnon":
				r.AnonKiB = n
			case "RssFile":
				r.FileKiB = n
			}
		}
		f.Close()
		out = append(out, r)
	}
	return out
}

// densityCPU is each sandbox's qemu CPU time so far (utime + stime).
func densityCPU(b *testing.B, infos []sandbox.Info) []time.Duration {
	b.Helper()
	const hz = 100 // USER_HZ on Linux
	out := make([]time.Duration, 0, len(infos))
	for _, info := range infos {
		s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", densityPID(b, info.Name)))
		if err != nil {
			b.Fatalf("qemu of %s: %v", info.Name, err)
		}
		// Fields after the ")" that ends the command name: state is 3,
		// utime 14 and stime 15 in proc(5) numbering.
		f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+1:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out = append(out, time.Duration(ut+st)*time.Second/hz)
	}
	return out
}

// densityMemAvailableMiB is the host's MemAvailable.
func densityMemAvailableMiB() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("meminfo: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("meminfo: %w", err)
			}
			return n / 1024, nil
		}
	}
	return 0, fmt.Errorf("meminfo: no MemAvailable")
}

func densityMiB(kib int64) string { return fmt.Sprintf("%d MiB", (kib+512)/1024) }
