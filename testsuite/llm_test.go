package testsuite

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/workflows"
)

// jsonArgs renders tool arguments the way a model sends them.
func jsonArgs(t *testing.T, v map[string]any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// TestLLMAgentEndToEnd runs an LLM-mode task on real VMs with the real
// go-openai client talking to a scripted OpenAI-compatible server. The
// "model" inspects the system, finds the network closed, asks for egress
// (the test approves with the answer signal, as `temporal workflow signal`
// would), reaches a server beyond the host, configures an nginx site,
// snapshots, breaks it, restores it, looks at its diff and finishes. The
// test then checks the diff, the verified playbook and the audit, which
// holds every tool call.
//
//	flock /tmp/airlock-vm.lock go test -run TestLLMAgentEndToEnd ./testsuite/
func TestLLMAgentEndToEnd(t *testing.T) {
	requireOpenForward(t)
	out := startOutside(t)
	nonce := "llm-" + randomHex(6)
	site := fmt.Sprintf("server {\n    listen 8081;\n    location / {\n        default_type text/plain;\n        return 200 'status %s\\n';\n    }\n}\n", nonce)
	probe := "for i in $(seq 50); do curl -fsS -m 2 http://127.0.0.1:8081/ && exit 0; sleep 0.2; done; echo BROKEN; exit 1"
	broken := "for i in $(seq 50); do curl -fsS -m 2 http://127.0.0.1:8081/ >/dev/null 2>&1 || { echo BROKEN; exit 0; }; sleep 0.2; done; echo STILL-UP"
	run := func(cmd string) FakeReply { return Call(tools.RunCommand, jsonArgs(t, map[string]any{"command": cmd})) }

	fake := StartFakeLLM(t,
		run("uname -a; systemctl is-active nginx; ls /etc/nginx/sites-enabled"),
		Call(tools.ReadFile, `{"path":"/etc/nginx/nginx.conf"}`).Expect("exit code 0"),
		run("curl -sS -m 3 "+out.URL).Expect("/etc/nginx/nginx.conf ("),
		Call(tools.RequestEgress, jsonArgs(t, map[string]any{"reason": "fetch the status template from the outside server", "destinations": []string{out.URL}, "minutes": 10})).
			Expect("exit code 28"), // closed: the packets are dropped
		run("curl -sS -m 5 "+out.URL).Expect("egress approved by alice"),
		Call(tools.EditFile, jsonArgs(t, map[string]any{"path": "/etc/nginx/sites-available/status", "op": "write", "content": site})).Expect(out.Body),
		run("ln -sf /etc/nginx/sites-available/status /etc/nginx/sites-enabled/status && nginx -t && systemctl reload nginx && "+probe).
			Expect("created /etc/nginx/sites-available/status"),
		Call(tools.CreateSnapshot, `{"name":"configured"}`).Expect("status "+nonce),
		run("rm /etc/nginx/sites-enabled/status && systemctl reload nginx && "+broken).
			Expect("snapshot configured of"),
		Call(tools.RestoreSnapshot, `{"name":"configured"}`).Expect("BROKEN"),
		run(probe).Expect("is back at snapshot configured"),
		Call(tools.Diff, `{}`).Expect("status "+nonce),
		Call(tools.Finish, `{"summary":"Added an nginx status site on port 8081; tested a breakage and restored it."}`).
			Expect("/etc/nginx/sites-available/status"),
	)
	const keyVar = "AIRLOCK_E2E_LLM_KEY"
	key := "sk-e2e-" + randomHex(8)
	t.Setenv(keyVar, key)
	s := startStack(t, func(c *config.Config) {
		c.LLM = config.LLM{BaseURL: fake.URL, Model: "scripted-e2e", APIKeyEnv: keyVar, MaxAttempts: 2}
	})

	in := workflows.TaskInput{
		Goal:     "serve a plain-text status page on port 8081 with nginx",
		Source:   workflows.SourceSpec{Image: "bookworm", Host: s.host},
		Agent:    workflows.AgentSpec{Mode: "llm", MaxSteps: 30},
		Target:   workflows.TargetSpec{Env: "prod", Hosts: []string{"prod-web-1"}},
		Approval: workflows.ApprovalPolicy{Approvers: []string{"alice", "bob"}},
		Origin:   workflows.Origin{Via: "cli", By: "e2e-requester"},
	}
	id := "task-e2e-llm-" + randomHex(6)
	ctx := context.Background()
	wrun, err := s.client.ExecuteWorkflow(ctx, workflows.StartOptions(id, in), workflows.WorkflowType, in)
	require.NoError(t, err)

	// The agent asks for egress; approve it the way the temporal CLI does.
	st := s.waitPhase(id, 15*time.Minute, func(st workflows.Status) bool {
		return st.Agent != nil && len(st.Agent.Questions) > 0 && st.Agent.Questions[0].Status == "pending"
	})
	q := st.Agent.Questions[0]
	require.Equal(t, "egress", q.Kind)
	require.Equal(t, []string{out.URL}, q.Destinations)
	require.Zero(t, out.hits.Load(), "nothing reached the outside before the approval")
	require.NoError(t, s.tp.Client.SignalWorkflow(ctx, id, "", workflows.SignalAnswer,
		map[string]any{"question_id": q.ID, "by": "alice", "choice": "approve", "comment": "one fetch"}))

	st = s.waitPhase(id, 25*time.Minute, func(st workflows.Status) bool { return st.Phase == workflows.PhaseAwaiting })
	require.Empty(t, fake.Errors(), "the scripted model saw unexpected tool results")
	require.Zero(t, fake.Remaining())
	require.Equal(t, workflows.EndFinished, st.Agent.EndReason)
	require.Contains(t, st.Agent.Summary, "port 8081")

	want := []string{"run_command", "read_file", "run_command", "request_egress", "run_command", "edit_file", "run_command",
		"create_snapshot", "run_command", "restore_snapshot", "run_command", "diff", "finish"}
	var got []string
	for _, step := range st.Steps {
		got = append(got, step.Tool)
		if step.Tool != tools.RunCommand || !strings.Contains(step.Args, "curl -sS -m 3 "+out.URL) {
			require.Empty(t, step.Error, "step %d %s", step.N, step.Tool)
		}
	}
	require.Equal(t, want, got)
	require.Equal(t, int32(1), out.hits.Load(), "exactly the approved fetch reached the outside")
	require.Len(t, st.Agent.Egress, 1)
	require.False(t, st.Agent.Egress[0].Open, "egress is closed when the agent ends")

	// The diff and the verified playbook have the site, not the breakage.
	require.Contains(t, st.DiffText, "/etc/nginx/sites-available/status")
	require.Contains(t, st.DiffText, "/etc/nginx/sites-enabled/status")
	require.NotNil(t, st.Verification)
	require.Equal(t, "verified", st.Verification.Status, "verification detail: %s", st.Verification.Detail)
	require.Contains(t, st.Plan.Playbook, "/etc/nginx/sites-available/status")

	// The key came from the worker's environment.
	reqs := fake.Requests()
	require.Len(t, reqs, len(want))
	require.Equal(t, "Bearer "+key, reqs[0].Authorization)
	require.Equal(t, "scripted-e2e", reqs[0].Model)

	require.NoError(t, s.tp.Client.SignalWorkflow(ctx, id, "", workflows.SignalApproval,
		map[string]any{"decision": "reject", "by": "bob", "plan_hash": st.Plan.PlanHash, "comment": "e2e: not for prod"}))
	var res workflows.Result
	require.NoError(t, wrun.Get(ctx, &res))
	require.Equal(t, workflows.PhaseRejected, res.Outcome)
	s.requireLLMAudit(id, want)
}

// requireLLMAudit checks the store has every tool call and LLM step once,
// and the human decisions with who took them.
func (s *stack) requireLLMAudit(id string, toolCalls []string) {
	t := s.t
	events, err := s.store.ListEvents(context.Background(), id)
	require.NoError(t, err)
	sort.Slice(events, func(i, j int) bool { return events[i].Seq < events[j].Seq }) // written concurrently
	count := map[string]int{}
	var calls []string
	for _, e := range events {
		count[e.Kind]++
		if e.Kind == "command" {
			var d map[string]any
			require.NoError(t, json.Unmarshal(e.Data, &d))
			calls = append(calls, fmt.Sprint(d["tool"]))
			require.NotEmpty(t, d["call_id"])
		}
		if e.Kind == "answer" {
			require.Equal(t, "alice", e.Actor)
		}
	}
	require.Equal(t, toolCalls, calls, "the audit has every tool call, in order")
	require.Equal(t, len(toolCalls), count["llm_step"])
	require.Equal(t, 1, count["agent_started"])
	require.Equal(t, 1, count["agent_question"])
	require.Equal(t, 1, count["answer"])
	require.Equal(t, 1, count["egress_opened"])
	require.Equal(t, 1, count["egress_closed"])
	require.Equal(t, 1, count["agent_end"])
	require.Equal(t, 1, count["diff"])
	require.Equal(t, 1, count["verification"])
	require.GreaterOrEqual(t, count["cleanup"], 1)
}
