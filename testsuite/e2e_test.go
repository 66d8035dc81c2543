package testsuite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	sdkworker "go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/airlock-dev/airlock/activities/agent"
	"github.com/airlock-dev/airlock/activities/apply"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/codec"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/store"
	"github.com/airlock-dev/airlock/store/storetest"
	"github.com/airlock-dev/airlock/worker"
	"github.com/airlock-dev/airlock/workflows"
)

// stack is the real thing, in one test process: a Temporal dev server,
// Postgres, libvirt VMs, the three workers, and the demo's prod-web-1.
type stack struct {
	t      *testing.T
	tp     *Temporal
	client client.Client // with the payload codec, like every Airlock process
	store  *store.Store
	cfg    config.Config
	host   string
	prod   worker.ProdVM
	keys   string
}

// replayKey is the codec key used when recording histories for the replay
// tests; it protects nothing but test data.
const replayKeyFile = "../workflows/testdata/codec.key"

// startStack starts the stack; opts adjust the configuration first (the
// LLM tests point cfg.LLM at a scripted server).
func startStack(t *testing.T, opts ...func(*config.Config)) *stack {
	t.Helper()
	cfg := config.Default()
	for _, o := range opts {
		o(&cfg)
	}
	RequirePath(t, "libvirt socket (make host)", "/run/libvirt/libvirt-sock")
	RequirePath(t, "golden image (make image)", filepath.Join(cfg.Images.CacheDir, "bookworm", "current", "disk.qcow2"))
	RequirePath(t, "ansible-playbook (make deps)", "/usr/bin/ansible-playbook")
	s := &stack{t: t, cfg: cfg, host: "e2e-" + randomHex(3)}
	s.tp = StartTemporal(t)

	s.keys = os.Getenv("AIRLOCK_TEST_CODEC_KEYS")
	if s.keys == "" {
		spec, err := codec.NewKeySpec("e2e")
		require.NoError(t, err)
		s.keys = spec
	}
	if os.Getenv("AIRLOCK_RECORD_HISTORY") != "" {
		b, err := os.ReadFile(replayKeyFile)
		require.NoError(t, err)
		s.keys = strings.TrimSpace(string(b))
	}
	s.cfg.Codec.Keys = s.keys
	s.cfg.Temporal.Address = s.tp.HostPort
	s.cfg.Envs = map[string]config.Environment{"prod": {Hosts: []string{"web", worker.ProdName}}}
	var err error
	quiet := sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	s.client, err = s.cfg.Dial(client.Options{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(s.client.Close)

	s.store, err = store.Open(context.Background(), storetest.Start(t))
	require.NoError(t, err)
	t.Cleanup(s.store.Close)

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	drv, err := worker.NewDriver(s.cfg, s.host, logger)
	require.NoError(t, err)
	t.Cleanup(func() { drv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s.prod, err = worker.EnsureProdVM(ctx, s.cfg.StateDir, drv)
	require.NoError(t, err, "prod-web-1")
	if _, err := drv.EnsureTemplate(ctx, "bookworm"); err != nil {
		t.Logf("no fast-start template, sandboxes cold-boot: %v", err)
	}

	control := sdkworker.New(s.client, workflows.TaskQueue, sdkworker.Options{})
	worker.RegisterControl(control, worker.ControlDeps{Config: s.cfg, Store: s.store})
	hvActs, err := worker.NewHypervisorActivities(drv, worker.HypervisorDeps{Config: s.cfg, Host: s.host, Store: s.store, Logger: logger})
	require.NoError(t, err)
	t.Cleanup(func() { hvActs.Pool.Close() })
	hvw := sdkworker.New(s.client, sandbox.Queue(s.host), sdkworker.Options{})
	hvw.RegisterActivity(hvActs)
	applyw := sdkworker.New(s.client, apply.Queue("prod"), sdkworker.Options{})
	applyw.RegisterActivity(&apply.Activities{
		Env: "prod", Inventory: filepath.Join(RepoRoot(), "deploy", "inventory", "prod.ini") + "," + s.prod.HostsFile,
		KnownHosts: s.prod.KnownHosts, SSHKey: s.prod.Key, Artifacts: s.store,
		SSHArgs: []string{"-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "IdentitiesOnly=yes"},
	})
	for _, w := range []sdkworker.Worker{control, hvw, applyw} {
		require.NoError(t, w.Start())
		t.Cleanup(w.Stop)
	}
	return s
}

func (s *stack) status(id string) (workflows.Status, error) {
	var st workflows.Status
	v, err := s.client.QueryWorkflow(context.Background(), id, "", workflows.QueryStatus)
	if err != nil {
		return st, err
	}
	return st, v.Get(&st)
}

// waitPhase polls the status query until cond holds; a final phase that
// does not satisfy cond fails at once.
func (s *stack) waitPhase(id string, timeout time.Duration, cond func(workflows.Status) bool) workflows.Status {
	s.t.Helper()
	var st workflows.Status
	var lastErr error
	Eventually(s.t, timeout, func() bool {
		st, lastErr = s.status(id)
		if lastErr != nil {
			return false
		}
		if cond(st) {
			return true
		}
		switch st.Phase {
		case workflows.PhaseFailed, workflows.PhaseCancelled, workflows.PhaseRejected, workflows.PhaseExpired, workflows.PhaseApplied:
			s.t.Fatalf("task ended in %s: %s", st.Phase, st.Error)
		}
		return false
	}, func() string { return fmt.Sprintf("phase %q, error %v / %s", st.Phase, lastErr, st.Error) })
	return st
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TestEndToEnd runs the demo runbook on real VMs: sandbox, diff, verified
// playbook, approval through the raw `approval` signal, apply to
// prod-web-1, and the page checked over HTTP from this host.
func TestEndToEnd(t *testing.T) {
	s := startStack(t)
	in, err := agent.LoadTask(filepath.Join(RepoRoot(), "deploy", "demo", "nginx-status-site.yaml"))
	require.NoError(t, err)
	nonce := "e2e-" + randomHex(8)
	found := false
	for i, step := range in.Agent.Steps {
		if step.WriteFile != nil && step.WriteFile.Path == "/var/www/status/index.html" {
			in.Agent.Steps[i].WriteFile.Content = "<h1>prod-web-1 is healthy</h1>\n<p>" + nonce + "</p>\n"
			found = true
		}
	}
	require.True(t, found, "the demo runbook writes the status page")
	in.Source.Host = s.host
	in.Origin = workflows.Origin{Via: "cli", By: "e2e-requester"}
	id := "task-e2e-" + randomHex(6)

	ctx := context.Background()
	run, err := s.client.ExecuteWorkflow(ctx, workflows.StartOptions(id, in), workflows.WorkflowType, in)
	require.NoError(t, err)

	st := s.waitPhase(id, 25*time.Minute, func(st workflows.Status) bool { return st.Phase == workflows.PhaseAwaiting })
	require.NotNil(t, st.Plan)
	require.NotNil(t, st.Verification)
	require.Equal(t, "verified", st.Verification.Status, "verification detail: %s", st.Verification.Detail)
	require.Equal(t, 6, st.DiffSummary["files_added"], st.DiffText)
	require.Contains(t, st.Plan.Playbook, "ansible.builtin.copy")
	require.NotContains(t, st.Plan.Playbook, "shell:")
	require.Len(t, st.Steps, len(in.Agent.Steps))

	// Approve the way `temporal workflow signal --input '{…}'` does: a raw
	// JSON payload through a client without the codec.
	require.NoError(t, s.tp.Client.SignalWorkflow(ctx, id, "", workflows.SignalApproval,
		map[string]any{"decision": "approve", "by": "alice", "plan_hash": st.Plan.PlanHash}))
	var res workflows.Result
	require.NoError(t, run.Get(ctx, &res))
	require.Equal(t, workflows.PhaseApplied, res.Outcome)

	// The change is on the production VM.
	resp, err := http.Get("http://" + s.prod.IP + ":8080/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), nonce)

	s.requireNothingInClear(id, nonce)
	s.requireAudit(id, len(in.Agent.Steps))
	s.recordHistory(id)
}

// requireNothingInClear reads raw history without the codec: the page
// content (which the agent's curl step printed) must not be there, while
// the codec client can read it.
func (s *stack) requireNothingInClear(id, secret string) {
	t := s.t
	raw := s.history(s.tp.Client, id)
	b, err := protojson.Marshal(raw)
	require.NoError(t, err)
	require.NotContains(t, string(b), secret, "command output must not be in history in clear")
	st, err := s.status(id)
	require.NoError(t, err)
	seen := false
	for _, step := range st.Steps {
		seen = seen || strings.Contains(step.Output, secret)
	}
	require.True(t, seen, "the codec client reads the curl output holding the secret")
}

func (s *stack) history(c client.Client, id string) *historypb.History {
	it := c.GetWorkflowHistory(context.Background(), id, "", false, 0)
	h := &historypb.History{}
	for it.HasNext() {
		e, err := it.Next()
		require.NoError(s.t, err)
		h.Events = append(h.Events, e)
	}
	return h
}

// requireAudit checks the store tells the whole story, once.
func (s *stack) requireAudit(id string, steps int) {
	t := s.t
	events, err := s.store.ListEvents(context.Background(), id)
	require.NoError(t, err)
	count := map[string]int{}
	seqs := map[int32]bool{}
	for _, e := range events {
		count[e.Kind]++
		require.False(t, seqs[e.Seq], "event seq %d recorded twice", e.Seq)
		seqs[e.Seq] = true
	}
	require.Equal(t, 1, count["task_started"])
	require.Equal(t, steps, count["command"])
	require.Equal(t, 1, count["diff"])
	require.Equal(t, 1, count["playbook"])
	require.Equal(t, 1, count["verification"])
	require.Equal(t, 1, count["approval"])
	require.Equal(t, 2, count["apply"], "check run and real run")
	require.GreaterOrEqual(t, count["cleanup"], 1)
}

// recordHistory writes the history for the replay tests when asked
// (make replay-record).
func (s *stack) recordHistory(id string) {
	dir := os.Getenv("AIRLOCK_RECORD_HISTORY")
	if dir == "" {
		return
	}
	b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(s.history(s.client, id))
	require.NoError(s.t, err)
	require.NoError(s.t, os.WriteFile(filepath.Join(dir, "agenttask_e2e.json"), b, 0o644))
}
