package approvalsui

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/workflows"
)

// questionStatus is a working task with a pending egress question whose
// reason carries script injection; the approvers come from the audit.
func questionBundle(t *testing.T) *bundle {
	b := setup(t)
	st := waitingStatus("task-q", "dave", 1)
	st.Phase, st.Approval, st.Plan = workflows.PhaseWorking, nil, nil
	st.Agent = &workflows.AgentStatus{Mode: "runbook", Questions: []workflows.Question{{
		ID: "q1", Kind: "egress", Text: "fetch nginx " + xss, Options: []string{"approve", "deny"},
		Destinations: []string{"deb.debian.org:80"}, Minutes: 5, Status: "pending", AskedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour),
		Denied: []workflows.AnswerDenied{{By: "mallory", Choice: "approve", Reason: "mallory is not an approver " + xss}},
	}}}
	b.temporal.add(st, true)
	b.events.byID["task-q"] = []Event{{ID: 1, WorkflowID: "task-q", Kind: "agent_question", Actor: "agent", At: time.Now(),
		Data: map[string]any{"question_id": "q1", "approvers": []any{"alice", "bob"}}}}
	return b
}

func TestQuestionIsShownEscapedWithItsOptions(t *testing.T) {
	b := questionBundle(t)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	page := br.get("/tasks/task-q")
	require.Equal(t, http.StatusOK, page.code)
	for _, want := range []string{"NETWORK EGRESS REQUEST", "deb.debian.org:80", "5 minutes", `action="/tasks/task-q/answer"`,
		`value="approve"`, `value="deny"`, "fetch nginx " + xssEscape, "mallory is not an approver " + xssEscape} {
		require.Contains(t, page.body, want)
	}
	require.Equal(t, 1, strings.Count(page.body, "<script"))

	list := br.get("/tasks")
	require.Contains(t, list.body, "2 tasks waiting for you", "task-1 to approve, task-q to answer")

	// dave is an approver by role but not of this task: no form, a reason.
	dave := b.browser(t)
	dave.mustLogin("dave", "dave-pw")
	page = dave.get("/tasks/task-q")
	require.Contains(t, page.body, "You (dave) are not an approver of this task")
	require.NotContains(t, page.body, `class="answer"`)
}

// The question carries its task's approvers in the status query: the page
// knows who may answer before the store has the question's event (the
// race a browser test met in CI).
func TestQuestionPolicyFromStatusBeforeEvents(t *testing.T) {
	b := questionBundle(t)
	b.events.byID["task-q"] = nil
	b.temporal.tasks["task-q"].st.Agent.Questions[0].Approvers = []string{"alice", "bob"}

	dave := b.browser(t)
	dave.mustLogin("dave", "dave-pw")
	page := dave.get("/tasks/task-q")
	require.Contains(t, page.body, "You (dave) are not an approver of this task. Approvers: alice, bob.")
	require.NotContains(t, page.body, `class="answer"`)

	alice := b.browser(t)
	alice.mustLogin("alice", "alice-pw")
	require.Contains(t, alice.get("/tasks/task-q").body, `class="answer"`)
	require.Contains(t, alice.get("/tasks").body, "2 tasks waiting for you", "task-1 to approve, task-q to answer")
}

func TestAnswerRefusals(t *testing.T) {
	b := questionBundle(t)
	viewer := b.browser(t)
	viewer.mustLogin("victor", "victor-pw")
	page := viewer.get("/tasks/task-q")
	require.Contains(t, page.body, "Your role is viewer")
	require.NotContains(t, page.body, `class="answer"`)
	form := url.Values{"csrf_token": {field(t, csrfRe, page.body)}, "question_id": {"q1"}, "choice": {"approve"}}
	require.Equal(t, http.StatusForbidden, viewer.post("/tasks/task-q/answer", form).code)

	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	require.Equal(t, http.StatusForbidden, br.post("/tasks/task-q/answer", url.Values{"question_id": {"q1"}, "choice": {"approve"}}).code, "no CSRF token")
	page = br.get("/tasks/task-q")
	form = url.Values{"csrf_token": {field(t, csrfRe, page.body)}, "question_id": {"q1"}}
	require.Equal(t, http.StatusBadRequest, br.post("/tasks/task-q/answer", form).code, "no choice")
	form.Set("choice", "approve")
	require.Equal(t, http.StatusNotFound, br.post("/tasks/task-nope/answer", form).code)

	api := func(tok, id, body string) resp {
		req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/api/v1/tasks/"+id+"/answer", strings.NewReader(body))
		require.NoError(t, err)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return br.do(req)
	}
	require.Equal(t, http.StatusUnauthorized, api("", "task-q", `{"question_id":"q1","choice":"approve"}`).code)
	require.Equal(t, http.StatusForbidden, api(viewerTok, "task-q", `{"question_id":"q1","choice":"approve"}`).code)
	require.Equal(t, http.StatusBadRequest, api(approverTok, "task-q", `{"question_id":"q1","choice":"approve","by":"bob"}`).code, "by is not a field")
	require.Equal(t, http.StatusNotFound, api(approverTok, "task-nope", `{"question_id":"q1","choice":"approve"}`).code)
	require.Zero(t, b.temporal.updateCount(), "nothing reached the workflow")

	r := br.get("/api/v1/tasks/task-q")
	require.Contains(t, r.body, `"may_answer":true`)
}

func TestClassifyAnswerError(t *testing.T) {
	require.Equal(t, "not_pending", classifyAnswerError(errString(`no pending question "q1"`), "q1").Code)
	require.Equal(t, "error", classifyAnswerError(errString("boom"), "q1").Code)
}

type errString string

func (e errString) Error() string { return string(e) }
