package approvalsui

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/workflows"
)

func TestTaskPageShowsTheReview(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	r := br.get("/tasks/task-1")
	require.Equal(t, http.StatusOK, r.code)
	for _, want := range []string{
		planHash, "verified", "apt-get install -y nginx", "/etc/motd", "<details class=\"file\"",
		"Packages (1)", "files added", "dave", "via <strong>cli</strong>", "0 of 1 approvals",
		`id="approve"`, `id="reject"`, `id="modify-link"`, "task_started", "awaiting_approval",
	} {
		require.Contains(t, r.body, want)
	}
	require.Contains(t, r.hdr.Get("Content-Security-Policy"), "script-src 'self'")
}

func TestScriptInjectionIsEscaped(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	for _, path := range []string{"/tasks/task-1", "/tasks", "/tasks/task-1/audit", "/tasks/task-1/files/2", "/tasks/task-1/steps/1"} {
		r := br.get(path)
		require.Equal(t, http.StatusOK, r.code, path)
		require.NotContains(t, r.body, xss, path)
		require.NotContains(t, r.body, "<script>alert", path)
		// Only our own script tag: the layout's.
		require.Equal(t, 1, strings.Count(r.body, "<script"), path)
	}
	page := br.get("/tasks/task-1").body
	require.Contains(t, page, `<h1 id="goal">configure nginx `+xssEscape+`</h1>`, "goal")
	require.Contains(t, page, `<span class="a">&#43;`+xssEscape+`</span>`, "file diff")
	require.Contains(t, page, "not an approver "+xssEscape, "refused attempt")
	require.Contains(t, page, "comment="+xssEscape, "comment in the audit log")
}

func TestUnknownTaskIs404(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	for _, p := range []string{"/tasks/task-nope", "/tasks/task-nope/modify", "/tasks/..%2f..%2fetc", "/tasks/task-1/files/99", "/tasks/task-1/steps/7", "/nowhere"} {
		require.Equal(t, http.StatusNotFound, br.get(p).code, p)
	}
	form := br.decisionForm("task-1", "approve")
	require.Equal(t, http.StatusNotFound, br.post("/tasks/task-nope/decision", form).code)
	r := br.get("/api/v1/tasks/task-nope")
	require.Equal(t, http.StatusNotFound, r.code)
	require.Contains(t, r.body, `"error":"not_found"`)
	require.Zero(t, b.temporal.updateCount())
}

func TestOversizedBodiesAre413(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	form := br.decisionForm("task-1", "modify")
	form.Set("playbook", strings.Repeat("x", 600<<10)) // over the 512 KiB body limit
	r := br.post("/tasks/task-1/decision", form)
	require.Equal(t, http.StatusRequestEntityTooLarge, r.code)

	form.Set("playbook", strings.Repeat("- x\n", (MaxPlaybookBytes/4)+10)) // under the body limit, over the playbook cap
	r = br.post("/tasks/task-1/decision", form)
	require.Equal(t, http.StatusRequestEntityTooLarge, r.code)
	require.Contains(t, r.body, "playbook is larger")

	// Chunked (no Content-Length): the limit bites while reading.
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/api/v1/tasks/task-1/decision",
		struct{ *strings.Reader }{strings.NewReader(`{"decision":"modify","plan_hash":"x","playbook":"` + strings.Repeat("y", 600<<10) + `"}`)})
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+approverTok)
	require.Equal(t, http.StatusRequestEntityTooLarge, br.do(req).code)
	require.Zero(t, b.temporal.updateCount())
}

func TestApproveRecordsTheApprover(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	r := br.post("/tasks/task-1/decision", br.decisionForm("task-1", "approve"))
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	require.Equal(t, "/tasks/task-1?done=approved", r.hdr.Get("Location"))
	st := b.temporal.status("task-1")
	require.Equal(t, "approved", st.Approval.Outcome)
	require.Equal(t, "alice", st.Approval.Votes[0].By)
	require.Equal(t, planHash, st.Approval.Votes[0].PlanHash)
	page := br.get(r.hdr.Get("Location"))
	require.Contains(t, page.body, "Approved: the plan goes to apply.")
	require.NotContains(t, page.body, `id="approve"`)
	// Metrics saw the decision.
	m := br.get("/metrics").body
	require.Contains(t, m, `airlock_decision_latency_seconds_count{decision="approve"} 1`)
	require.Contains(t, m, `airlock_http_request_duration_seconds_count{code="303",method="POST",route="/tasks/:id/decision"} 1`)
}

func TestRejectNeedsAComment(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("bob", "bob-pw")
	form := br.decisionForm("task-1", "reject")
	r := br.post("/tasks/task-1/decision", form)
	require.Equal(t, http.StatusUnprocessableEntity, r.code)
	require.Contains(t, r.body, "needs a comment")
	form.Set("comment", "not on a Friday "+xss)
	r = br.post("/tasks/task-1/decision", form)
	require.Equal(t, http.StatusSeeOther, r.code, r.body)
	st := b.temporal.status("task-1")
	require.Equal(t, "rejected", st.Approval.Outcome)
	require.Equal(t, "bob", st.Approval.RejectedBy)
}

func TestStalePlanIsRefused(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	form := br.decisionForm("task-1", "approve")
	form.Set("plan_hash", "sha256:0000000000000000000000000000")
	r := br.post("/tasks/task-1/decision", form)
	require.Equal(t, http.StatusConflict, r.code)
	require.Contains(t, r.body, "The plan changed since this page was loaded")
	require.True(t, b.temporal.status("task-1").Approval.Open)

	// A stale modify keeps the user's text beside the current playbook.
	form = br.decisionForm("task-1", "modify")
	form.Set("plan_hash", "sha256:old")
	form.Set("playbook", "- hosts: web\n  tasks: [my edit]\n")
	r = br.post("/tasks/task-1/decision", form)
	require.Equal(t, http.StatusConflict, r.code)
	require.Contains(t, r.body, `id="your-edit"`)
	require.Contains(t, r.body, "my edit")
}

func TestDoubleSubmitRecordsOneDecision(t *testing.T) {
	b := setup(t)
	b.temporal.add(waitingStatus("task-2", "dave", 2), true)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	form := br.decisionForm("task-2", "approve")
	tab2 := br.decisionForm("task-2", "approve")
	first := br.post("/tasks/task-2/decision", form)
	second := br.post("/tasks/task-2/decision", form) // same nonce: same update ID
	require.Equal(t, http.StatusSeeOther, first.code)
	require.Equal(t, first.hdr.Get("Location"), second.hdr.Get("Location"))
	st := b.temporal.status("task-2")
	require.Len(t, st.Approval.Votes, 1)
	require.Empty(t, st.Approval.Denied[1:], "the repeat was not even seen by the gate")

	// A second tab (another nonce) is refused by the workflow, nicely.
	r := br.post("/tasks/task-2/decision", tab2)
	require.Equal(t, http.StatusConflict, r.code)
	require.Contains(t, r.body, "You already approved this plan")
	require.Contains(t, r.body, "already voted on this plan")
	require.Len(t, b.temporal.status("task-2").Approval.Votes, 1)
}

func TestNotWaiting(t *testing.T) {
	b := setup(t)
	st := waitingStatus("task-done", "dave", 1)
	st.Phase, st.Approval.Open, st.Approval.Outcome = workflows.PhaseApplied, false, "approved"
	b.temporal.add(st, false)
	st2 := waitingStatus("task-verifying", "dave", 1)
	st2.Phase, st2.Approval = workflows.PhaseVerifying, nil
	b.temporal.add(st2, true)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	for _, id := range []string{"task-done", "task-verifying"} {
		page := br.get("/tasks/" + id)
		require.Contains(t, page.body, "not waiting for approval")
		require.NotContains(t, page.body, `id="approve"`)
		form := url.Values{"csrf_token": {field(t, csrfRe, page.body)}, "nonce": {"n1"}, "plan_hash": {planHash}, "decision": {"approve"}}
		r := br.post("/tasks/"+id+"/decision", form)
		require.Equal(t, http.StatusConflict, r.code, id)
		require.Contains(t, r.body, "not waiting for approval", id)
	}
}

func TestSeparationOfDutiesIsShown(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("dave", "dave-pw")
	page := br.get("/tasks/task-1").body
	require.Contains(t, page, "You started this task. Separation of duties")
	require.NotContains(t, page, `id="approve"`)
	require.Contains(t, page, `id="reject"`)
	// The workflow refuses it even if forced.
	r := br.post("/tasks/task-1/decision", br.decisionForm("task-1", "approve"))
	require.Equal(t, http.StatusForbidden, r.code)
	require.Contains(t, r.body, "does not allow self-approval")
}

func TestViewerCannotDecide(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("victor", "victor-pw")
	page := br.get("/tasks/task-1")
	require.Contains(t, page.body, "Your role is viewer")
	require.NotContains(t, page.body, `class="decision"`)
	r := br.post("/tasks/task-1/decision", url.Values{"csrf_token": {field(t, csrfRe, page.body)}, "decision": {"approve"}, "plan_hash": {planHash}})
	require.Equal(t, http.StatusForbidden, r.code)
	require.Zero(t, b.temporal.updateCount())
}

func TestListPutsTasksWaitingForYouFirst(t *testing.T) {
	b := setup(t)
	other := waitingStatus("task-0-bobs", "dave", 1)
	other.Approval.Policy.Approvers = []string{"bob"}
	b.temporal.add(other, true)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	r := br.get("/tasks")
	require.Equal(t, http.StatusOK, r.code)
	i1, i0 := strings.Index(r.body, `data-id="task-1"`), strings.Index(r.body, `data-id="task-0-bobs"`)
	require.True(t, i1 >= 0 && i0 >= 0 && i1 < i0, "alice's task first")
	require.Contains(t, r.body, "1 task waiting for you")
	require.Equal(t, http.StatusBadRequest, br.get("/tasks?phase=nope").code)
	require.Equal(t, http.StatusBadRequest, br.get("/tasks?target=x'+OR+1=1").code)
	require.Equal(t, "WorkflowType = 'AgentTask' AND AirlockPhase = 'awaiting_approval' AND AirlockSource = 'ui' AND AirlockTarget = 'prod:web'",
		filter{Phase: "awaiting_approval", Source: "ui", Target: "prod:web"}.query())
}

func TestTaskPageStaysSmall(t *testing.T) {
	b := setup(t)
	st := waitingStatus("task-big", "dave", 1)
	var diff strings.Builder
	diff.WriteString(fmt.Sprintf("Files (%d)\n", 60))
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&diff, "  M /etc/app/conf-%02d  [content] file 0644 0:0 1 B -> file 0644 0:0 9000 B\n", i)
		for j := 0; j < 200; j++ {
			fmt.Fprintf(&diff, "      +line %d of a long configuration file in the sandbox\n", j)
		}
	}
	st.DiffText = diff.String()
	for i := 2; i < 150; i++ {
		st.Steps = append(st.Steps, workflows.StepRecord{N: i, Tool: "run", Args: "make", Output: strings.Repeat("compiler output\n", 4000)})
	}
	st.Plan.Playbook = strings.Repeat("- name: a task\n  copy: {dest: /etc/x, content: y}\n", 3000)
	b.temporal.add(st, true)
	for i := 0; i < 500; i++ {
		b.events.byID["task-big"] = append(b.events.byID["task-big"], Event{Kind: "command", At: time.Now(), Data: map[string]any{"output": strings.Repeat("z", 5000)}})
	}
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	r := br.get("/tasks/task-big")
	require.Equal(t, http.StatusOK, r.code)
	if len(r.body) >= 100<<10 {
		_ = os.WriteFile(filepath.Join(os.TempDir(), "airlock-big-page.html"), []byte(r.body), 0o644)
	}
	require.Less(t, len(r.body), 100<<10, "task page must stay under 100 KB")
	require.Contains(t, r.body, `href="/tasks/task-big/files/60"`, "files over the budget get a link")
	f := br.get("/tasks/task-big/files/60")
	require.Equal(t, http.StatusOK, f.code)
	require.True(t, strings.Contains(f.body, "&#43;line 199 of a long"), "the whole diff of the file")
	require.Contains(t, r.body, `href="/tasks/task-big/playbook"`)
	require.Contains(t, br.get("/tasks/task-big/playbook").hdr.Get("Content-Type"), "text/plain")
}

func TestSSEStreamsStatusAndEnds(t *testing.T) {
	b := setup(t)
	st := waitingStatus("task-done", "dave", 1)
	st.Phase, st.Approval.Open = workflows.PhaseApplied, false
	b.temporal.add(st, false)
	b.events.byID["task-done"] = []Event{{Kind: "phase", Actor: "airlock", Data: map[string]any{"phase": "applied"}}}
	br := b.browser(t)
	br.mustLogin("victor", "victor-pw")
	r := br.get("/api/v1/tasks/task-done/events")
	require.Equal(t, http.StatusOK, r.code)
	require.Equal(t, "text/event-stream", r.hdr.Get("Content-Type"))
	require.Contains(t, r.body, "event: status\n")
	require.Contains(t, r.body, `"phase":"applied"`)
	require.Contains(t, r.body, "event: audit\n")
	require.Contains(t, r.body, "event: end\n")
	require.Equal(t, http.StatusNotFound, br.get("/api/v1/tasks/task-nope/events").code)
}

func TestMetricsCountTasksByPhase(t *testing.T) {
	b := setup(t)
	r := b.browser(t).get("/metrics")
	require.Equal(t, http.StatusOK, r.code)
	require.Contains(t, r.body, `airlock_tasks{phase="awaiting_approval"} 1`)
	require.Contains(t, r.body, `airlock_tasks{phase="applied"} 0`)
	require.Contains(t, r.body, "airlock_tasks_count_error 0")
}

func TestOpenAPIServed(t *testing.T) {
	r := setup(t).browser(t).get("/api/v1/openapi.yaml")
	require.Equal(t, http.StatusOK, r.code)
	require.Contains(t, r.body, "openapi: 3.1.0")
}

func TestParseDiff(t *testing.T) {
	v := parseDiff(waitingStatus("x", "d", 1).DiffText)
	require.Len(t, v.Sections, 2)
	require.Equal(t, "Packages", v.Sections[0].Title)
	require.Equal(t, []string{"+ nginx 1.22.1-9 "}, v.Sections[0].Lines)
	files := v.Sections[1].Files
	require.Len(t, files, 2)
	require.Equal(t, "A", files[0].Action)
	require.Equal(t, "/etc/nginx/sites-enabled/app", files[0].Path)
	require.Equal(t, "/etc/motd", files[1].Path)
	require.Equal(t, "[content] file 0644 0:0 3 B -> file 0644 0:0 40 B", files[1].Desc)
	require.Len(t, files[1].Diff, 5)
	require.Contains(t, v.Summary, "packages +1")
	require.Equal(t, "just text\n", parseDiff("just text\n").Raw)
}
