package testsuite

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/airlock-dev/airlock/activities/agent"
	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/activities/apply"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/workflows"
)

// startLLMWorkers runs the real AgentTask and the real LLM step activity
// (go-openai against llmURL) with the other activities faked by name, on
// a real dev server: the LLM path end to end without VMs.
func startLLMWorkers(t *testing.T, c client.Client, f *uiFakes, llmURL string) {
	t.Helper()
	reg := func(w worker.Worker, fn any, name string) {
		w.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
	control := worker.New(c, workflows.TaskQueue, worker.Options{})
	control.RegisterWorkflowWithOptions(workflows.AgentTask, workflows.RegisterOptions())
	reg(control, f.Catalog, workflows.ActCatalog)
	reg(control, f.RecordEvent, workflows.ActRecordEvent)
	reg(control, f.UpsertTask, workflows.ActUpsertTask)
	reg(control, f.GeneratePlaybook, workflows.ActGeneratePlaybook)
	reg(control, f.PlanFromEdit, workflows.ActPlanFromEdit)
	control.RegisterActivity(&agent.LLM{Config: config.LLM{BaseURL: llmURL, Model: "scripted", MaxAttempts: 2}})

	hv := worker.New(c, sandbox.Queue(workflows.DefaultHost), worker.Options{})
	reg(hv, f.CreateSandbox, workflows.ActCreateSandbox)
	reg(hv, f.DestroySandbox, workflows.ActDestroySandbox)
	reg(hv, f.Exec, workflows.ActExec)
	reg(hv, f.TakeManifest, workflows.ActTakeManifest)
	reg(hv, f.CaptureChanges, workflows.ActCaptureChanges)
	reg(hv, f.VerifyPlaybook, workflows.ActVerifyPlaybook)
	reg(hv, func(ctx context.Context, in sandbox.ReadFileInput) ([]byte, error) {
		return []byte("listen 80;\n"), nil
	}, workflows.ActReadFile)

	ap := worker.New(c, apply.Queue(workflows.DefaultEnv), worker.Options{})
	reg(ap, f.ApplyPlaybook, workflows.ActApplyPlaybook)
	for _, w := range []worker.Worker{control, hv, ap} {
		require.NoError(t, w.Start())
		t.Cleanup(w.Stop)
	}
}

func llmTask(readOnly bool, maxErrors int) workflows.TaskInput {
	return workflows.TaskInput{
		Goal: "look at nginx", Source: workflows.SourceSpec{Image: "bookworm"},
		Agent:    workflows.AgentSpec{Mode: "llm", ReadOnly: readOnly, MaxErrors: maxErrors},
		Target:   workflows.TargetSpec{Env: "prod", Hosts: []string{"prod-web-1"}},
		Approval: workflows.ApprovalPolicy{Approvers: []string{"alice"}},
	}
}

// TestLLMAgentOnDevServer: the real go-openai client against the scripted
// server, inside the real workflow on a real dev server.
func TestLLMAgentOnDevServer(t *testing.T) {
	tp := StartTemporal(t)
	ctx := context.Background()
	tryStatus := func(id string) (workflows.Status, error) {
		var st workflows.Status
		v, err := tp.Client.QueryWorkflow(ctx, id, "", workflows.QueryStatus)
		if err == nil {
			err = v.Get(&st)
		}
		return st, err
	}
	status := func(id string) workflows.Status {
		st, err := tryStatus(id)
		require.NoError(t, err)
		return st
	}
	start := func(t *testing.T, in workflows.TaskInput, script ...FakeReply) (*FakeLLM, string, client.WorkflowRun) {
		fake := StartFakeLLM(t, script...)
		f := &uiFakes{}
		startLLMWorkers(t, tp.Client, f, fake.URL)
		id := "task-llm-dev-" + randomHex(4)
		run, err := tp.Client.ExecuteWorkflow(ctx, workflows.StartOptions(id, in), workflows.WorkflowType, in)
		require.NoError(t, err)
		return fake, id, run
	}

	t.Run("endpoint 429 and 5xx are retried, then the task fails clearly", func(t *testing.T) {
		fake, id, run := start(t, llmTask(false, 0),
			FakeReply{Status: http.StatusTooManyRequests, RetryAfter: "1"},
			Call(tools.RunCommand, `{"command":"nginx -v"}`),
			FakeReply{Status: http.StatusInternalServerError},
			FakeReply{Status: http.StatusServiceUnavailable, Body: "upstream down"},
		)
		err := run.Get(ctx, nil)
		require.Error(t, err)
		require.Contains(t, err.Error(), "failed 2 times; last: HTTP 503")
		st := status(id)
		require.Equal(t, workflows.PhaseFailed, st.Phase)
		require.Equal(t, workflows.EndLLMFailed, st.Agent.EndReason)
		require.Equal(t, []string{"run_command"}, []string{st.Steps[0].Tool})
		require.Len(t, fake.Requests(), 4, "the 429 was retried once, the 5xx twice")
		require.Empty(t, fake.Errors())
	})

	t.Run("bad tool calls go back to the model; too many in a row end the task", func(t *testing.T) {
		fake, id, run := start(t, llmTask(false, 3),
			FakeReply{ToolCalls: []FakeToolCall{{Name: "run_command", Arguments: `{"command": "ls"`}}},
			Call("reboot_now", `{}`).Expect("not valid JSON"),
			FakeReply{Body: "<html>proxy error</html>"},
		)
		err := run.Get(ctx, nil)
		require.Error(t, err)
		require.Contains(t, err.Error(), "3 errors in a row")
		require.Empty(t, fake.Errors())
		reqs := fake.Requests()
		require.Len(t, reqs, 3)
		require.Contains(t, reqs[2].LastTool(), `unknown tool "reboot_now"`)
		st := status(id)
		require.Equal(t, workflows.EndTooManyErrors, st.Agent.EndReason)
		require.Equal(t, 3, st.Agent.Errors)
	})

	t.Run("read-only offers and runs only tools that change nothing", func(t *testing.T) {
		fake, id, run := start(t, llmTask(true, 0),
			Call(tools.RunCommand, `{"command":"touch /etc/x"}`),
			Call(tools.ReadFile, `{"path":"/etc/nginx/nginx.conf"}`).Expect("read-only"),
			Call(tools.Finish, `{"summary":"listens on 80"}`).Expect("listen 80;"),
		)
		// Polling a running workflow: a query can time out while its worker
		// is busy (seen once in CI); only the condition matters.
		var st workflows.Status
		var qerr error
		Eventually(t, time.Minute, func() bool { st, qerr = tryStatus(id); return qerr == nil && st.Phase == workflows.PhaseAwaiting },
			func() string { return fmt.Sprintf("phase %s %s (last query error: %v)", st.Phase, st.Error, qerr) })
		require.NoError(t, tp.Client.CancelWorkflow(ctx, id, ""))
		require.Error(t, run.Get(ctx, nil))
		require.Empty(t, fake.Errors())
		require.NotContains(t, fake.Requests()[0].Tools, tools.RunCommand)
		require.Equal(t, workflows.EndFinished, st.Agent.EndReason)
		require.True(t, strings.HasPrefix(st.Steps[0].Error, "refused: this task is read-only"), st.Steps[0].Error)
	})
}
