package testsuite

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/workflows"
)

// TestApprovalsUIQuestions answers request_egress and request_approval
// questions of real runbook tasks on the task page (headless chromium, a
// real dev server, activities faked by name).
func TestApprovalsUIQuestions(t *testing.T) {
	b := uiSetup(t)

	t.Run("answer an egress question: egress opens and the task goes on to approval", func(t *testing.T) {
		reason := "fetch nginx from the Debian mirror " + uiXSS
		in := uiInput("install nginx from the mirror", 1, "alice", "bob")
		in.Agent.Steps = []workflows.RunbookStep{
			{RequestEgress: &tools.RequestEgressArgs{Reason: reason, Destinations: []string{"deb.debian.org:80", "security.debian.org:80"}, Minutes: 5}},
			{Run: "apt-get install -y nginx"},
		}
		id, st := b.startQuestionTask(t, in)
		q := st.Agent.Questions[0]
		require.Equal(t, "egress", q.Kind)

		br := b.browser(t)
		br.login("alice")
		br.do(chromedp.Navigate(br.base + "/tasks"))
		br.waitText(fmt.Sprintf(`tr[data-id=%q]`, id), "waiting for you")
		br.openTask(id)
		box := "#question-" + q.ID
		br.waitText(box+" h3", "NETWORK EGRESS REQUEST")
		require.Equal(t, reason, br.text(box+" .prompt"), "the reason renders as text")
		require.Equal(t, "deb.debian.org:80, security.debian.org:80", br.text(box+" .destinations"))
		require.Contains(t, br.text(box+" .minutes"), "5 minutes")
		require.Equal(t, 2, br.count(box+" form.answer button[name=choice]"))

		// The API shows the same question, with the caller's right to answer.
		api := uiRun(br, chromedp.Evaluate[[]string](fmt.Sprintf(`fetch('/api/v1/tasks/%s').then(r => r.json()).then(j =>
			[j.questions[0].id, j.questions[0].kind, j.questions[0].status, String(j.questions[0].may_answer)])`, id), chromedp.EvalAwaitPromise))
		require.Equal(t, []string{q.ID, "egress", "pending", "true"}, api)

		br.do(chromedp.SendKeys(chromedp.CSS(box+" input[name=comment]"), "ok for 5 minutes"),
			chromedp.Click(chromedp.CSS(box+` button[data-choice="approve"]`)))
		br.waitText("#flash", "Your answer is recorded")

		b.waitStatus(t, id, "awaiting approval after the egress step", func(s workflows.Status) bool {
			return s.Phase == workflows.PhaseAwaiting && s.Approval != nil && s.Approval.Open
		})
		calls := b.fakes.egressCalls(st.Sandbox.Name)
		require.NotEmpty(t, calls)
		require.True(t, calls[0].Open, "the approved egress was opened first")

		answers := b.fakes.eventsOf(id, "answer", "alice")
		require.Len(t, answers, 1)
		require.Equal(t, "approve", answers[0].Data["choice"])
		require.Equal(t, q.ID, answers[0].Data["question_id"])
		require.Equal(t, "update", answers[0].Data["via"])

		br.do(chromedp.Navigate(br.base + "/tasks/" + id))
		br.waitText(box+" .answered-by", "alice chose approve")
		require.Zero(t, br.count(box+" form.answer"), "an answered question has no form")
		br.waitText("#audit-rows", "choice=approve")
		br.noAlerts()
	})

	t.Run("viewer, non-approver, missing CSRF, double submit and a stale form", func(t *testing.T) {
		in := uiInput("restart the app after a look", 1, "alice", "victor")
		in.Agent.Steps = append([]workflows.RunbookStep{
			{RequestApproval: &workflows.ApprovalStep{Question: "The app looks wedged. Restart it?", Options: []string{"go", "stop"}}},
		}, in.Agent.Steps...)
		id, st := b.startQuestionTask(t, in)
		q := st.Agent.Questions[0]
		require.Equal(t, "approval", q.Kind)
		box := "#question-" + q.ID
		post := func(br *uiBrowser, choice string) (int, string) {
			got := uiRun(br, chromedp.Evaluate[[]any](fmt.Sprintf(`fetch('/tasks/%s/answer', {method: 'POST', body: new URLSearchParams({
				csrf_token: document.querySelector('input[name=csrf_token]').value, question_id: %q, choice: %q, nonce: 'n-' + Math.random()})})
				.then(async r => [r.status, await r.text()])`, id, q.ID, choice), chromedp.EvalAwaitPromise))
			return int(got[0].(float64)), got[1].(string)
		}

		// A viewer sees the question but has no form, and a hand-made POST
		// with a valid CSRF token is refused.
		viewer := b.browser(t)
		viewer.login("victor")
		viewer.openTask(id)
		viewer.waitText(box+" .prompt", "Restart it?")
		viewer.waitText(box+" .q-note", "Your role is viewer")
		require.Zero(t, viewer.count("form.answer"))
		code, _ := post(viewer, "go")
		require.Equal(t, 403, code)

		// An approver by role who is not an approver of this task: the
		// page says so, and the workflow's own reason is shown when tried.
		carol := b.browser(t)
		carol.login("carol")
		carol.do(chromedp.Navigate(carol.base + "/tasks/" + id))
		carol.waitText(box+" .q-note", "not an approver of this task")
		code, body := post(carol, "go")
		require.Equal(t, 403, code)
		require.Contains(t, body, "Refused by the workflow: carol is not an approver of this task")
		carol.do(chromedp.Navigate(carol.base + "/tasks/" + id))
		carol.waitText(box+" .q-denied", "carol tried go")

		// A POST without the CSRF token gets 403 and reaches nothing.
		br := b.browser(t)
		br.login("alice")
		br.openTask(id)
		stale := br.tab()
		stale.do(chromedp.Navigate(br.base+"/tasks/"+id), chromedp.WaitVisible(chromedp.CSS(box+" form.answer")))
		br.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector('%s form.answer input[name=csrf_token]').remove()`, box)),
			chromedp.Click(chromedp.CSS(box+` button[data-choice="go"]`)))
		br.waitText("#message", "CSRF token is missing or wrong")
		require.Contains(t, br.text("h1"), "403")
		require.Empty(t, b.fakes.eventsOf(id, "answer", ""))
		require.Len(t, b.fakes.eventsOf(id, "answer_denied", ""), 1, "only carol's")

		// The same form sent twice at once is one answer.
		br.do(chromedp.Navigate(br.base+"/tasks/"+id), chromedp.WaitVisible(chromedp.CSS(box+" form.answer")))
		got := uiRun(br, chromedp.Evaluate[[]string](fmt.Sprintf(`(async () => {
			const f = document.querySelector('%s form.answer');
			const send = () => { const d = new FormData(f); d.append('choice', 'go'); return fetch(f.action, {method: 'POST', body: new URLSearchParams(d)}); };
			const rs = await Promise.all([send(), send()]);
			return rs.map(r => r.status + ' ' + new URL(r.url).search);
		})()`, box), chromedp.EvalAwaitPromise))
		require.Equal(t, []string{"200 ?done=answered", "200 ?done=answered"}, got)
		require.Len(t, b.fakes.eventsOf(id, "answer", "alice"), 1)
		b.waitStatus(t, id, "awaiting approval after the question", func(s workflows.Status) bool {
			return s.Phase == workflows.PhaseAwaiting && s.Approval != nil && s.Approval.Open
		})

		// The other tab's form: the question is not pending any more.
		stale.do(chromedp.Click(chromedp.CSS(box + ` button[data-choice="stop"]`)))
		stale.waitText("#error", "is not waiting for an answer")
		require.Len(t, b.fakes.eventsOf(id, "answer", ""), 1, "no second answer")
		now, err := b.status(t, id)
		require.NoError(t, err)
		require.Equal(t, "answered", now.Agent.Questions[0].Status)
		require.Equal(t, "go", now.Agent.Questions[0].Choice)
		require.Equal(t, "alice", now.Agent.Questions[0].AnsweredBy)
	})
}

// startQuestionTask starts the real workflow and waits until its first
// question is pending.
func (b *uiBundle) startQuestionTask(t *testing.T, in workflows.TaskInput) (string, workflows.Status) {
	t.Helper()
	id := "task-uiq-" + strings.Trim(idCleaner.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(id) > 200 {
		id = id[:200]
	}
	_, err := b.temporal.Client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: id, TaskQueue: workflows.TaskQueue,
	}, workflows.WorkflowType, in)
	require.NoError(t, err)
	st := b.waitStatus(t, id, "a pending question", func(st workflows.Status) bool {
		return st.Agent != nil && len(st.Agent.Questions) > 0 && st.Agent.Questions[0].Status == "pending" && st.Sandbox != nil
	})
	return id, st
}
