package testsuite

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/activities/hv"
	"github.com/airlock-dev/airlock/activities/playbook"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/store"
	"github.com/airlock-dev/airlock/store/storetest"
	"github.com/airlock-dev/airlock/worker"
)

// The change-capture scenarios of issue 4, on real VMs. Each one drives
// the hypervisor activities directly (no workflow, no approval): sandbox →
// baseline manifest → the scenario's commands → final manifest → capture →
// playbook (the control activity) → verification on a fresh clone, which
// must say "verified" (empty residual diff, changed=0 on the second run).
//
// At most AIRLOCK_SCENARIO_PARALLEL (default 2) scenarios run at once, and
// each destroys its sandbox before verifying, so at most that many guests
// run. Run under the machine-wide VM lock:
//
//	flock /tmp/airlock-vm.lock go test -run TestScenarios ./testsuite/

// scenarioEnv is the slice of the stack the scenarios need: Postgres for
// artifacts, the libvirt driver, the host activities and the planner.
type scenarioEnv struct {
	image string
	store *store.Store
	hv    *hv.Activities
	plan  *playbook.Activities

	mu      sync.Mutex
	timings []string
}

func newScenarioEnv(t *testing.T) *scenarioEnv {
	t.Helper()
	cfg := config.Default()
	// AIRLOCK_IMAGE_CACHE and AIRLOCK_SCENARIO_IMAGE point the scenarios
	// at another golden image (e.g. a candidate build).
	if dir := os.Getenv("AIRLOCK_IMAGE_CACHE"); dir != "" {
		cfg.Images.CacheDir = dir
	}
	image := os.Getenv("AIRLOCK_SCENARIO_IMAGE")
	if image == "" {
		image = "bookworm"
	}
	RequirePath(t, "libvirt socket (make host)", "/run/libvirt/libvirt-sock")
	RequirePath(t, "golden image (make image)", filepath.Join(cfg.Images.CacheDir, image, "current", "disk.qcow2"))
	RequirePath(t, "ansible-playbook (make deps)", "/usr/bin/ansible-playbook")
	st, err := store.Open(context.Background(), storetest.Start(t))
	require.NoError(t, err)
	t.Cleanup(st.Close)

	host := "scn-" + randomHex(3)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	drv, err := worker.NewDriver(cfg, host, logger)
	require.NoError(t, err)
	t.Cleanup(func() { drv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := drv.EnsureTemplate(ctx, image); err != nil {
		t.Logf("no fast-start template, sandboxes cold-boot: %v", err)
	}
	acts, err := worker.NewHypervisorActivities(drv, worker.HypervisorDeps{Config: cfg, Host: host, Store: st, Logger: logger})
	require.NoError(t, err)
	t.Cleanup(func() { acts.Pool.Close() })
	return &scenarioEnv{image: image, store: st, hv: acts, plan: &playbook.Activities{Artifacts: st}}
}

// step is one thing the "agent" does: a script (must exit 0) or a file.
type step struct {
	run   string
	write *sandbox.WriteFileInput
}

func runStep(script string) step { return step{run: script} }

func writeStep(path, content string, mode uint32) step {
	return step{write: &sandbox.WriteFileInput{Path: path, Content: []byte(content), Mode: mode}}
}

// outcome is what a scenario's checks look at.
type outcome struct {
	c    *changes.Changes
	text string // changes.Format of c
	plan playbook.Plan
	sbx  string // the agent's sandbox (still running during check)
}

type scenario struct {
	name string
	// snapshot, if set, is taken right after the baseline manifest.
	snapshot string
	steps    []step
	check    func(t *testing.T, e *scenarioEnv, o outcome)
	// custom, if set, replaces the whole pipeline (tests that need a VM
	// but no playbook).
	custom func(t *testing.T, e *scenarioEnv)
}

func parallelism() int {
	if n, err := strconv.Atoi(os.Getenv("AIRLOCK_SCENARIO_PARALLEL")); err == nil && n >= 1 {
		return n
	}
	return 2
}

func TestScenarios(t *testing.T) {
	e := newScenarioEnv(t)
	sem := make(chan struct{}, parallelism())
	t.Run("group", func(t *testing.T) {
		for _, sc := range scenarios() {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				sem <- struct{}{}
				defer func() { <-sem }()
				if sc.custom != nil {
					sc.custom(t, e)
					return
				}
				e.run(t, sc)
			})
		}
	})
	sort.Strings(e.timings)
	for _, l := range e.timings {
		t.Log(l)
	}
}

func (e *scenarioEnv) run(t *testing.T, sc scenario) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	owner := "task-scn-" + sc.name + "-" + randomHex(3)
	var phases []string
	mark := func(what string, since time.Time) {
		phases = append(phases, fmt.Sprintf("%s %.1fs", what, time.Since(since).Seconds()))
	}
	t0 := time.Now()
	defer func() {
		e.mu.Lock()
		e.timings = append(e.timings, fmt.Sprintf("%-14s total %5.1fs: %s", sc.name, time.Since(t0).Seconds(), strings.Join(phases, ", ")))
		e.mu.Unlock()
	}()

	start := time.Now()
	sbx, err := e.hv.CreateSandbox(ctx, sandbox.CreateInput{Owner: owner, Image: e.image})
	require.NoError(t, err)
	t.Cleanup(func() { e.destroy(t, sbx.Name, sandbox.NameFor(owner, "v1")) })
	mark("create", start)

	start = time.Now()
	base, err := e.hv.TakeManifest(ctx, sandbox.ManifestInput{Sandbox: sbx.Name})
	require.NoError(t, err)
	mark(fmt.Sprintf("baseline(%d files, %d hashed)", base.Entries, base.Hashed), start)

	if sc.snapshot != "" {
		require.NoError(t, e.hv.CreateSnapshot(ctx, sandbox.SnapshotInput{Sandbox: sbx.Name, Name: sc.snapshot}))
	}
	start = time.Now()
	var cmdlog []playbook.CommandRecord
	for _, s := range sc.steps {
		if s.write != nil {
			in := *s.write
			in.Sandbox = sbx.Name
			_, err := e.hv.WriteFile(ctx, in)
			require.NoError(t, err, "write %s", in.Path)
			continue
		}
		res, err := e.hv.Exec(ctx, sandbox.ExecInput{Sandbox: sbx.Name, Script: s.run, Timeout: 5 * time.Minute, OutputCap: 8192})
		require.NoError(t, err, s.run)
		require.Zero(t, res.ExitCode, "%s\n%s", s.run, res.Output)
		cmdlog = append(cmdlog, playbook.CommandRecord{Command: s.run, ExitCode: res.ExitCode})
	}
	mark("steps", start)

	start = time.Now()
	final, err := e.hv.TakeManifest(ctx, sandbox.ManifestInput{Sandbox: sbx.Name, BaselineRef: base.Ref})
	require.NoError(t, err)
	mark(fmt.Sprintf("final(%d hashed)", final.Hashed), start)

	start = time.Now()
	capt, err := e.hv.CaptureChanges(ctx, sandbox.CaptureInput{Sandbox: sbx.Name, BeforeRef: base.Ref, AfterRef: final.Ref, BeforeFilesRef: base.FilesRef})
	require.NoError(t, err)
	raw, err := e.store.ReadArtifact(ctx, capt.ChangesRef)
	require.NoError(t, err)
	var capture changes.Capture
	require.NoError(t, json.Unmarshal(raw, &capture))
	var text strings.Builder
	require.NoError(t, changes.Format(&text, capture.Changes))
	mark("capture", start)

	start = time.Now()
	plan, err := e.plan.GeneratePlaybook(ctx, playbook.GenerateInput{WorkflowID: owner, ChangesRef: capt.ChangesRef, CommandLog: cmdlog})
	require.NoError(t, err)
	mark("plan", start)
	t.Logf("diff:\n%s\nplaybook:\n%s\nflags: %q\nfindings: %q", text.String(), plan.Playbook, plan.Flags, plan.Findings)
	for _, m := range playbookModules(t, plan.Playbook) {
		require.NotContains(t, []string{"ansible.builtin.shell", "shell", "ansible.builtin.raw", "raw"}, m, "never replay commands as shell tasks")
	}

	sc.check(t, e, outcome{c: capture.Changes, text: text.String(), plan: plan, sbx: sbx.Name})

	start = time.Now()
	require.NoError(t, e.hv.DestroySandbox(ctx, sbx.Name), "one guest per scenario: the sandbox goes before the clone")
	vr, err := e.hv.VerifyPlaybook(ctx, sandbox.VerifyInput{Owner: owner, Image: e.image, Attempt: 1, BundleRef: plan.BundleRef, AgentFinalRef: final.Ref})
	require.NoError(t, err)
	mark("verify", start)
	require.Equal(t, hv.Verified, vr.Status, "verification detail:\n%s\nplaybook:\n%s", vr.Detail, plan.Playbook)
	require.Contains(t, vr.SecondRun, "changed=0")
}

// destroy removes the scenario's guests whatever happened.
func (e *scenarioEnv) destroy(t *testing.T, names ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range names {
		if err := e.hv.DestroySandbox(ctx, n); err != nil {
			t.Errorf("destroy %s: %v", n, err)
		}
	}
}

// fileChange finds the file change of p, failing the test if there is none.
func fileChange(t *testing.T, o outcome, p string) changes.FileChange {
	t.Helper()
	for _, f := range o.c.Files {
		if string(f.Path) == p {
			return f
		}
	}
	require.Failf(t, "file change missing", "%s not in the diff:\n%s", p, o.text)
	return changes.FileChange{}
}

func serviceChange(t *testing.T, o outcome, unit string) changes.ServiceChange {
	t.Helper()
	for _, s := range o.c.Services {
		if s.Unit == unit {
			return s
		}
	}
	require.Failf(t, "service change missing", "%s not in the diff:\n%s", unit, o.text)
	return changes.ServiceChange{}
}

// requireModules requires the playbook's tasks or handlers to use each
// of the modules.
func requireModules(t *testing.T, o outcome, mods ...string) {
	t.Helper()
	used := playbookModules(t, o.plan.Playbook)
	for _, m := range mods {
		require.Contains(t, used, m, "playbook must use %s", m)
	}
}

// taskKeywords are the task keys that are not the module.
var taskKeywords = map[string]bool{"name": true, "notify": true, "when": true, "register": true, "changed_when": true,
	"failed_when": true, "become": true, "tags": true, "listen": true, "loop": true, "vars": true, "ignore_errors": true,
	"check_mode": true, "diff": true, "no_log": true, "args": true, "environment": true, "block": true}

// playbookModules lists the module of every task and handler.
func playbookModules(t *testing.T, text string) []string {
	t.Helper()
	var plays []map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(text), &plays), text)
	var mods []string
	for _, play := range plays {
		for _, section := range []string{"pre_tasks", "tasks", "post_tasks", "handlers"} {
			tasks, _ := play[section].([]any)
			for _, task := range tasks {
				m, _ := task.(map[string]any)
				for k := range m {
					if !taskKeywords[k] {
						mods = append(mods, k)
					}
				}
			}
		}
	}
	sort.Strings(mods)
	return mods
}
