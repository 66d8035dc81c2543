package workflows

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"

	"github.com/airlock-dev/airlock/activities/apply"
	"github.com/airlock-dev/airlock/activities/playbook"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// fakeActivities stands in for the three workers in workflow tests. Each
// activity is a XxxFunc field; the defaults behave like a healthy stack
// and record what they were asked.
type fakeActivities struct {
	mu        sync.Mutex
	events    []Event
	created   []string
	destroyed []string
	applies   []apply.Input
	execs     []sandbox.ExecInput
	verifies  []sandbox.VerifyInput
	plans     int

	CreateSandboxFunc func(context.Context, sandbox.CreateInput) (sandbox.Info, error)
	ExecFunc          func(context.Context, sandbox.ExecInput) (sandbox.ExecResult, error)
	VerifyFunc        func(context.Context, sandbox.VerifyInput) (sandbox.VerifyResult, error)
	ApplyFunc         func(context.Context, apply.Input) (apply.Result, error)
	PlanFromEditFunc  func(context.Context, playbook.EditInput) (playbook.Plan, error)
}

func (f *fakeActivities) Catalog(ctx context.Context) (Catalog, error) {
	return Catalog{Images: []string{"bookworm"}, Envs: []string{"prod"}, Hosts: []string{"prod-web-1", "web"}}, nil
}

func (f *fakeActivities) RecordEvent(ctx context.Context, ev Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, ev)
	return nil
}

func (f *fakeActivities) UpsertTask(ctx context.Context, rec TaskRecord) error { return nil }

func (f *fakeActivities) GeneratePlaybook(ctx context.Context, in playbook.GenerateInput) (playbook.Plan, error) {
	f.mu.Lock()
	f.plans++
	f.mu.Unlock()
	return playbook.Plan{PlanHash: "sha256:plan1", BundleRef: "sha256:bundle1", Playbook: "- hosts: all\n", Tasks: 3}, nil
}

func (f *fakeActivities) PlanFromEdit(ctx context.Context, in playbook.EditInput) (playbook.Plan, error) {
	if f.PlanFromEditFunc != nil {
		return f.PlanFromEditFunc(ctx, in)
	}
	f.mu.Lock()
	f.plans++
	n := f.plans
	f.mu.Unlock()
	return playbook.Plan{PlanHash: fmt.Sprintf("sha256:plan%d", n), BundleRef: fmt.Sprintf("sha256:bundle%d", n), Playbook: in.Playbook, Edited: true, EditedBy: in.By}, nil
}

func (f *fakeActivities) Capacity(ctx context.Context) (sandbox.Capacity, error) {
	return sandbox.Capacity{Host: "local", FreeMemoryMiB: 8192}, nil
}

func (f *fakeActivities) CreateSandbox(ctx context.Context, in sandbox.CreateInput) (sandbox.Info, error) {
	f.mu.Lock()
	f.created = append(f.created, sandbox.NameFor(in.Owner, in.Suffix))
	f.mu.Unlock()
	if f.CreateSandboxFunc != nil {
		return f.CreateSandboxFunc(ctx, in)
	}
	return sandbox.Info{Name: sandbox.NameFor(in.Owner, in.Suffix), IP: "10.77.0.100", Image: in.Image}, nil
}

func (f *fakeActivities) DestroySandbox(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.destroyed = append(f.destroyed, name)
	return nil
}

func (f *fakeActivities) Exec(ctx context.Context, in sandbox.ExecInput) (sandbox.ExecResult, error) {
	f.mu.Lock()
	f.execs = append(f.execs, in)
	f.mu.Unlock()
	if f.ExecFunc != nil {
		return f.ExecFunc(ctx, in)
	}
	return sandbox.ExecResult{ExitCode: 0, Output: "ok\n", TotalBytes: 3}, nil
}

func (f *fakeActivities) WriteFile(ctx context.Context, in sandbox.WriteFileInput) (sandbox.WriteFileResult, error) {
	return sandbox.WriteFileResult{Path: in.Path, Bytes: len(in.Content)}, nil
}

func (f *fakeActivities) CreateSnapshot(ctx context.Context, in sandbox.SnapshotInput) error {
	return nil
}
func (f *fakeActivities) RestoreSnapshot(ctx context.Context, in sandbox.SnapshotInput) error {
	return nil
}

func (f *fakeActivities) TakeManifest(ctx context.Context, in sandbox.ManifestInput) (sandbox.ManifestResult, error) {
	if in.BaselineRef == "" {
		return sandbox.ManifestResult{Ref: "sha256:before", Entries: 100}, nil
	}
	return sandbox.ManifestResult{Ref: "sha256:after", Entries: 101}, nil
}

func (f *fakeActivities) CaptureChanges(ctx context.Context, in sandbox.CaptureInput) (sandbox.CaptureResult, error) {
	return sandbox.CaptureResult{ChangesRef: "sha256:changes", Summary: map[string]int{"files_added": 1}, Text: "1 file added"}, nil
}

func (f *fakeActivities) VerifyPlaybook(ctx context.Context, in sandbox.VerifyInput) (sandbox.VerifyResult, error) {
	f.mu.Lock()
	f.verifies = append(f.verifies, in)
	f.mu.Unlock()
	if f.VerifyFunc != nil {
		return f.VerifyFunc(ctx, in)
	}
	return sandbox.VerifyResult{Status: "verified"}, nil
}

func (f *fakeActivities) ApplyPlaybook(ctx context.Context, in apply.Input) (apply.Result, error) {
	f.mu.Lock()
	f.applies = append(f.applies, in)
	f.mu.Unlock()
	if f.ApplyFunc != nil {
		return f.ApplyFunc(ctx, in)
	}
	return apply.Result{OK: true, Check: in.Check, Changed: 2, Recap: "ok=3 changed=2 failed=0"}, nil
}

func (f *fakeActivities) register(env *testsuite.TestWorkflowEnvironment) {
	reg := func(fn any, name string) { env.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name}) }
	reg(f.Catalog, ActCatalog)
	reg(f.RecordEvent, ActRecordEvent)
	reg(f.UpsertTask, ActUpsertTask)
	reg(f.GeneratePlaybook, ActGeneratePlaybook)
	reg(f.PlanFromEdit, ActPlanFromEdit)
	reg(f.Capacity, ActCapacity)
	reg(f.CreateSandbox, ActCreateSandbox)
	reg(f.DestroySandbox, ActDestroySandbox)
	reg(f.Exec, ActExec)
	reg(f.WriteFile, ActWriteFile)
	reg(f.CreateSnapshot, ActCreateSnapshot)
	reg(f.RestoreSnapshot, ActRestoreSnapshot)
	reg(f.TakeManifest, ActTakeManifest)
	reg(f.CaptureChanges, ActCaptureChanges)
	reg(f.VerifyPlaybook, ActVerifyPlaybook)
	reg(f.ApplyPlaybook, ActApplyPlaybook)
}

func (f *fakeActivities) kinds() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.events))
	for _, e := range f.events {
		out = append(out, e.Kind)
	}
	return out
}

func (f *fakeActivities) eventsOf(kind string) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Event
	for _, e := range f.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

type testBundle struct {
	suite testsuite.WorkflowTestSuite
	env   *testsuite.TestWorkflowEnvironment
	acts  *fakeActivities
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{acts: &fakeActivities{}}
	b.env = b.suite.NewTestWorkflowEnvironment()
	b.env.SetTestTimeout(30 * time.Second)
	b.env.RegisterWorkflowWithOptions(AgentTask, workflowOptions())
	b.acts.register(b.env)
	return b
}

// requireCleanedUp asserts that the agent sandbox was destroyed and a
// cleanup event recorded.
func (b *testBundle) requireCleanedUp(t *testing.T) {
	t.Helper()
	b.acts.mu.Lock()
	destroyed := append([]string(nil), b.acts.destroyed...)
	b.acts.mu.Unlock()
	require.Contains(t, destroyed, sandbox.NameFor(testWorkflowID, ""), "sandbox must be destroyed")
	require.NotEmpty(t, b.acts.eventsOf("cleanup"), "cleanup must be recorded")
}

func (b *testBundle) status(t *testing.T) Status {
	t.Helper()
	v, err := b.env.QueryWorkflow(QueryStatus)
	require.NoError(t, err)
	var st Status
	require.NoError(t, v.Get(&st))
	return st
}

const testWorkflowID = "default-test-workflow-id"

func validInput() TaskInput {
	return TaskInput{
		Goal:     "configure nginx",
		Source:   SourceSpec{Image: "bookworm"},
		Agent:    AgentSpec{Mode: "runbook", Steps: []RunbookStep{{Run: "echo hi"}, {WriteFile: &WriteFile{Path: "/etc/motd", Content: "hi\n"}}}},
		Target:   TargetSpec{Env: "prod", Hosts: []string{"prod-web-1"}},
		Approval: ApprovalPolicy{Approvers: []string{"alice", "bob", "carol"}},
		Origin:   Origin{Via: "cli", By: "dave"},
	}
}
