package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// BenchmarkSandboxReady measures "sandbox ready" — CreateSandbox from the
// request to the first SSH command that succeeded (`true` over a pooled
// connection with a fresh user certificate) — on the restore path (the
// host's template memory image onto a new overlay) and on a cold boot of
// the same image, in the same run. Each iteration makes one of each,
// alternating which goes first, and destroys it before the next, so only
// one of them runs at a time. It prints medians, the ratio and the
// driver's per-phase timings; it asserts no timing.
//
// AIRLOCK_BENCH_SKIP_COLD=1 measures the restore path only (quick
// before/after comparisons while working on the image).
func BenchmarkSandboxReady(b *testing.B) {
	e := sbxSetup(b)
	e.ensureTemplate(b)
	skipCold := os.Getenv("AIRLOCK_BENCH_SKIP_COLD") == "1"
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()

	var restore, cold []sbxReady
	var destroys []time.Duration
	one := func(tag string, boot sandbox.BootPreference) sbxReady {
		r, err := e.create(ctx, tag, boot)
		if err != nil {
			b.Fatal(err)
		}
		if want := boot == sandbox.BootRestore; r.Info.Restored != want {
			b.Fatalf("%s: restored=%v, asked for %s", r.Info.Name, r.Info.Restored, boot)
		}
		t0 := time.Now()
		if err := e.destroy(ctx, r.Info.Name); err != nil {
			b.Fatal(err)
		}
		destroys = append(destroys, time.Since(t0))
		return r
	}
	for i := 0; b.Loop(); i++ {
		order := []sandbox.BootPreference{sandbox.BootRestore, sandbox.BootCold}
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, boot := range order {
			switch {
			case boot == sandbox.BootRestore:
				restore = append(restore, one(fmt.Sprintf("r%d", i), boot))
			case !skipCold:
				cold = append(cold, one(fmt.Sprintf("c%d", i), boot))
			}
		}
	}

	rMed, cMed := sbxMedian(sbxTook(restore)), sbxMedian(sbxTook(cold))
	rows := [][]string{{"path", "n", "median", "min–max"}}
	rows = append(rows, []string{"restore", fmt.Sprint(len(restore)), sbxRound(rMed).String(), sbxRange(sbxTook(restore))})
	if len(cold) > 0 {
		rows = append(rows, []string{"cold boot", fmt.Sprint(len(cold)), sbxRound(cMed).String(), sbxRange(sbxTook(cold))})
	}
	rows = append(rows, []string{"destroy", fmt.Sprint(len(destroys)), sbxRound(sbxMedian(destroys)).String(), sbxRange(destroys)})
	summary := fmt.Sprintf("sandbox ready (CreateSandbox → first SSH command OK):%s", sbxTable(rows))
	if len(cold) > 0 {
		summary += fmt.Sprintf("\n  cold/restore = %.1f× (goal: restore ≤ 3 s median and ≥ 7× faster than cold)", sbxRatio(cMed, rMed))
		b.ReportMetric(cMed.Seconds(), "cold-s")
		b.ReportMetric(sbxRatio(cMed, rMed), "cold/restore")
	}
	sbxPrint(b, summary+"\n"+sbxPhaseTable(restore, cold))
	b.ReportMetric(rMed.Seconds(), "restore-s")
	b.ReportMetric(0, "ns/op") // one op is a pair of sandboxes: meaningless
}

func sbxTook(rs []sbxReady) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = r.Took
	}
	return out
}

// sbxPhaseTable shows the median offset of each driver phase within Start
// (restore or boot, guest agent, clock, identity written and activated,
// the guest has its IP), and "ssh ok" from the request, per path.
func sbxPhaseTable(restore, cold []sbxReady) string {
	var names []string
	offsets := func(rs []sbxReady) map[string][]time.Duration {
		m := map[string][]time.Duration{}
		for _, r := range rs {
			for _, p := range r.Phase {
				if !slices.Contains(names, p.What) {
					names = append(names, p.What)
				}
				m[p.What] = append(m[p.What], p.After)
			}
		}
		return m
	}
	r, c := offsets(restore), offsets(cold)
	cell := func(m map[string][]time.Duration, what string) string {
		if len(m[what]) == 0 {
			return "-"
		}
		return sbxRound(sbxMedian(m[what])).String()
	}
	rows := [][]string{{"phase (median offset)", "restore", "cold boot"}}
	for _, n := range names {
		rows = append(rows, []string{n, cell(r, n), cell(c, n)})
	}
	took := func(rs []sbxReady) string {
		if len(rs) == 0 {
			return "-"
		}
		return sbxRound(sbxMedian(sbxTook(rs))).String()
	}
	rows = append(rows, []string{"ssh ok (from the request)", took(restore), took(cold)})
	return "driver phases (Create's from its start, then Start's from its start):" + sbxTable(rows)
}
