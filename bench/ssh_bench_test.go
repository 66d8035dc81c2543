package bench

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// sshRTBatch is how many commands each method runs per iteration, so
// that -benchtime 5x gives 20 samples of each.
const sshRTBatch = 4

// sshMethod runs `true` in the sandbox once by one route.
type sshMethod struct {
	name string
	what string
	run  func(ctx context.Context) error
	// batch, if set, runs n commands at once and returns each one's time
	// (the Temporal route measures inside a workflow).
	batch func(ctx context.Context, n int) ([]time.Duration, error)
}

// BenchmarkSSHRoundTrip measures the round trip of `true` in one real
// sandbox (restored from the host's template) by each route a command can
// take, interleaved so that load on the machine hits them alike:
//
//	pooled         the worker's path: remote.Pool's reused connection
//	go-dial        a new x/crypto/ssh connection per command
//	ssh-process    a new OpenSSH `ssh` process per command (user cert from
//	               remote.CAs.WriteOpenSSHFiles)
//	controlmaster  `ssh -S sock` through a persistent OpenSSH master
//	temporal       the Exec activity scheduled by a workflow on a Temporal
//	               dev server (./bin/temporal), activity on the pooled path
//	cm-bare        controlmaster with `true` as the bare remote command
//
// Every route but cm-bare runs what remote.Client.Exec runs: the script
// on stdin to `exec env AIRLOCK_EXEC_ID=… bash /dev/fd/3 3<&0 </dev/null`
// under the login shell, so the routes differ only in transport; cm-bare
// shows what that wrapper (two more execs in the guest) costs.
//
// It prints medians and the ratios the issue names; it asserts no timing.
func BenchmarkSSHRoundTrip(b *testing.B) {
	e := sbxSetup(b)
	e.ensureTemplate(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	r, err := e.create(ctx, "rt", sandbox.BootAuto)
	if err != nil {
		b.Fatal(err)
	}
	sbxPrint(b, fmt.Sprintf("sandbox %s at %s (restored %v), ready in %v", r.Info.Name, r.Info.IP, r.Info.Restored, sbxRound(r.Took)))
	target := remote.Target{Name: r.Info.Name, Addr: r.Info.IP}

	methods := []sshMethod{
		{name: "pooled", what: "reused connection (remote.Pool)", run: func(ctx context.Context) error {
			c, err := e.acts.Pool.Get(ctx, target)
			if err != nil {
				return err
			}
			return sshCheck(c.Exec(ctx, "true", remote.ExecOptions{}))
		}},
		{name: "go-dial", what: "new x/crypto/ssh connection", run: func(ctx context.Context) error {
			c, err := e.dialer.Dial(ctx, target)
			if err != nil {
				return err
			}
			defer c.Close()
			return sshCheck(c.Exec(ctx, "true", remote.ExecOptions{}))
		}},
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		sbxPrint(b, "no OpenSSH client (ssh) in PATH: ssh-process and controlmaster skipped")
	} else {
		methods = append(methods, sshOpenSSHMethods(b, e, r.Info)...)
	}
	if m, why := sshTemporalMethod(b, e, r.Info.Name); m != nil {
		methods = append(methods, *m)
	} else {
		sbxPrint(b, "temporal skipped: "+why)
	}

	// Warm every route once (first dial, master, worker) outside the figures.
	for _, m := range methods {
		if err := sshRunBatch(ctx, m, 1, nil); err != nil {
			b.Fatalf("%s: %v", m.name, err)
		}
	}
	samples := map[string][]time.Duration{}
	for i := 0; b.Loop(); i++ {
		for j := range methods {
			m := methods[(i+j)%len(methods)]
			if err := sshRunBatch(ctx, m, sshRTBatch, samples); err != nil {
				b.Fatalf("%s: %v", m.name, err)
			}
		}
	}

	med := map[string]time.Duration{}
	rows := [][]string{{"route", "n", "median", "min–max", "× pooled", "what"}}
	for _, m := range methods {
		med[m.name] = sbxMedian(samples[m.name])
	}
	for _, m := range methods {
		rows = append(rows, []string{m.name, fmt.Sprint(len(samples[m.name])), sbxRound(med[m.name]).String(),
			sbxRange(samples[m.name]), fmt.Sprintf("%.1f", sbxRatio(med[m.name], med["pooled"])), m.what})
		b.ReportMetric(float64(med[m.name].Microseconds())/1000, m.name+"-ms")
	}
	report := "command round trip for `true`:" + sbxTable(rows)
	if p, ok := med["ssh-process"]; ok {
		report += fmt.Sprintf("\n  ssh-process/pooled = %.1f× (goal ≥ 5×)", sbxRatio(p, med["pooled"]))
		b.ReportMetric(sbxRatio(p, med["pooled"]), "process/pooled")
	}
	if cm, ok := med["controlmaster"]; ok {
		report += fmt.Sprintf("\n  pooled/controlmaster = %.2f× (goal ≤ 1.5×)", sbxRatio(med["pooled"], cm))
		b.ReportMetric(sbxRatio(med["pooled"], cm), "pooled/cm")
	}
	if t, ok := med["temporal"]; ok {
		report += fmt.Sprintf("\n  temporal = %v (DESIGN §8 goal ≤ 0.2 s; ≥ 5× faster than go-dial: %.1f×)",
			sbxRound(t), sbxRatio(med["go-dial"], t))
	}
	sbxPrint(b, report)
	b.ReportMetric(0, "ns/op") // one op is a batch of every route: meaningless
}

// sshRunBatch runs n commands by m and adds their times to samples (if set).
func sshRunBatch(ctx context.Context, m sshMethod, n int, samples map[string][]time.Duration) error {
	if m.batch != nil {
		ds, err := m.batch(ctx, n)
		if err != nil {
			return err
		}
		if samples != nil {
			samples[m.name] = append(samples[m.name], ds...)
		}
		return nil
	}
	for range n {
		t0 := time.Now()
		if err := m.run(ctx); err != nil {
			return err
		}
		if samples != nil {
			samples[m.name] = append(samples[m.name], time.Since(t0))
		}
	}
	return nil
}

func sshCheck(res remote.ExecResult, err error) error {
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("`true` exited %d: %s", res.ExitCode, res.Stderr.String())
	}
	return nil
}

// sshOpenSSHMethods are the OpenSSH client routes: a user key and
// certificate for the sandbox's principal and a known_hosts that trusts
// only the host CA (what ansible gets), a process per command, and a
// ControlMaster that the benchmark starts and stops.
func sshOpenSSHMethods(b *testing.B, e *sbxEnv, info sandbox.Info) []sshMethod {
	b.Helper()
	dir := b.TempDir()
	files, err := e.cas.WriteOpenSSHFiles(dir, info.Principal, 10*time.Minute)
	if err != nil {
		b.Fatalf("openssh files: %v", err)
	}
	common := []string{"-F", "/dev/null", "-i", files.Key, "-o", "CertificateFile=" + files.Key + "-cert.pub",
		"-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=" + files.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30",
		"-l", remote.LoginUser}
	sock := filepath.Join(dir, "cm.sock")
	mux := append(append([]string{}, common...), "-o", "ControlPath="+sock)
	ssh := func(ctx context.Context, args ...string) error { return sshRun(ctx, "true\n", args...) }
	sshNoStdin := func(ctx context.Context, args ...string) error { return sshRun(ctx, "", args...) }
	// -f: the master goes to the background once authenticated; -O exit
	// stops it (before the sandbox is destroyed: cleanups run last first).
	if err := sshNoStdin(context.Background(), append(mux, "-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-f", "-N", info.IP)...); err != nil {
		b.Fatalf("start ControlMaster: %v", err)
	}
	b.Cleanup(func() {
		if err := sshNoStdin(context.Background(), append(mux, "-O", "exit", info.IP)...); err != nil {
			b.Errorf("stop ControlMaster: %v", err)
		}
	})
	return []sshMethod{
		{name: "ssh-process", what: "new `ssh` process + connection", run: func(ctx context.Context) error {
			return ssh(ctx, append(common, info.IP, sshExecCommand)...)
		}},
		{name: "controlmaster", what: "`ssh -S` over an OpenSSH master", run: func(ctx context.Context) error {
			return ssh(ctx, append(mux, "-o", "ControlMaster=no", info.IP, sshExecCommand)...)
		}},
		{name: "cm-bare", what: "controlmaster, bare `true` (no Exec wrapper)", run: func(ctx context.Context) error {
			return sshNoStdin(ctx, append(mux, "-o", "ControlMaster=no", info.IP, "true")...)
		}},
	}
}

// sshExecCommand is the remote command remote.Client.Exec starts (with a
// fixed marker): the script arrives on stdin.
const sshExecCommand = "exec env AIRLOCK_EXEC_ID=bench bash /dev/fd/3 3<&0 </dev/null"

// sshRun runs the OpenSSH client with stdin (none if empty).
func sshRun(ctx context.Context, stdin string, args ...string) error {
	cmd := exec.CommandContext(ctx, "ssh", args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ssh %s: %w: %s", strings.Join(args[len(args)-2:], " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
