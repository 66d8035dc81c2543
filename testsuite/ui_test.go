package testsuite

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/airlock-dev/airlock/workflows"
)

// TestApprovalsUI drives the approvals page in headless chromium against a
// real Temporal dev server, real waiting AgentTask workflows (activities
// faked by name, no VMs) and the real approvals-ui handler.
func TestApprovalsUI(t *testing.T) {
	b := uiSetup(t)

	t.Run("log in, find the pending task, expand a diff, approve, apply", func(t *testing.T) {
		id, st := b.startTask(t, uiInput("install nginx on prod-web-1", 1, "alice", "bob"))
		br := b.browser(t)
		br.login("alice")
		br.do(chromedp.Navigate(br.base + "/tasks"))
		br.waitText(fmt.Sprintf(`tr[data-id=%q]`, id), "waiting for you")
		br.openTask(id)
		require.Equal(t, st.Plan.PlanHash, br.text("#plan-hash"))
		require.Contains(t, br.text("#verification"), "verified")

		// The file diff is behind an expander until opened.
		require.False(t, uiRun(br, chromedp.Evaluate[bool](`document.getElementById('file-2').open`)))
		br.do(chromedp.Click(chromedp.CSS("#file-2 summary")), chromedp.WaitVisible(chromedp.CSS("#file-2 pre.diff")))
		require.Contains(t, br.text("#file-2 pre.diff"), "+welcome")

		// A second tab keeps the form, for the "not waiting" check below.
		late := br.tab()
		late.do(chromedp.Navigate(br.base+"/tasks/"+id), chromedp.WaitVisible(chromedp.ID("approve")))

		br.do(chromedp.Click(chromedp.ID("approve")))
		br.waitText("#flash", "Approved")

		res := b.result(t, id)
		require.Equal(t, workflows.PhaseApplied, res.Outcome)
		require.Equal(t, st.Plan.PlanHash, res.PlanHash)
		require.Equal(t, 2, b.fakes.count(id, "apply"), "check run, then the real run")
		votes := b.fakes.eventsOf(id, "approval", "alice")
		require.Len(t, votes, 1)
		require.Equal(t, st.Plan.PlanHash, votes[0].Data["plan_hash"])

		// The stale tab: the task is not waiting any more.
		late.enableForms()
		late.do(chromedp.Click(chromedp.ID("approve")))
		late.waitText("#error", "not waiting for approval")
		require.Len(t, b.fakes.eventsOf(id, "approval", ""), 1, "no second decision")
	})

	t.Run("reject with a comment", func(t *testing.T) {
		id, _ := b.startTask(t, uiInput("open port 8080", 1, "alice", "bob"))
		br := b.browser(t)
		br.login("bob")
		br.openTask(id)
		// The comment is required: an empty reject does not leave the page.
		br.do(chromedp.Click(chromedp.ID("reject")))
		require.True(t, uiRun(br, chromedp.Evaluate[bool](`!document.getElementById('reject-comment').validity.valid`)))
		comment := "not on a Friday " + uiXSS
		br.do(chromedp.SendKeys(chromedp.ID("reject-comment"), comment), chromedp.Click(chromedp.ID("reject")))
		br.waitText("#flash", "Rejected")

		res := b.result(t, id)
		require.Equal(t, workflows.PhaseRejected, res.Outcome)
		require.Contains(t, res.Detail, "bob: "+comment)
		require.Zero(t, b.fakes.count(id, "apply"))

		br.do(chromedp.Navigate(br.base + "/tasks/" + id))
		br.waitText("#gate-state", "rejected by bob")
		br.waitText("#audit-rows", "comment="+comment)
		br.noAlerts()
	})

	t.Run("modify the playbook: re-verified, asked again with a new plan_hash", func(t *testing.T) {
		id, st := b.startTask(t, uiInput("tune nginx", 1, "alice", "bob"))
		require.Equal(t, 1, b.fakes.count(id, "verify"))
		br := b.browser(t)
		br.login("alice")
		br.openTask(id)
		br.do(chromedp.Click(chromedp.ID("modify-link")), chromedp.WaitVisible(chromedp.ID("playbook-edit")))
		require.Contains(t, uiRun(br, chromedp.Value(chromedp.ID("playbook-edit"))), "install nginx")
		edited := strings.Replace(uiPlaybook, "welcome", "welcome, edited by a human", 1)
		br.do(chromedp.SetValue(chromedp.ID("playbook-edit"), edited), chromedp.Click(chromedp.ID("submit-modify")))
		br.waitText("#flash", "edited playbook was accepted")

		st2 := b.waitStatus(t, id, "approval asked again for the edited plan", func(s workflows.Status) bool {
			return s.Phase == workflows.PhaseAwaiting && s.Plan != nil && s.Plan.PlanHash != st.Plan.PlanHash
		})
		require.Equal(t, 2, b.fakes.count(id, "verify"), "the edited plan is verified again")
		require.Equal(t, 1, b.fakes.count(id, "edit"))
		require.Equal(t, edited, st2.Plan.Playbook)
		require.Equal(t, "alice", st2.Plan.EditedBy)

		br.do(chromedp.Navigate(br.base+"/tasks/"+id), chromedp.WaitVisible(chromedp.ID("approve")))
		require.Equal(t, st2.Plan.PlanHash, br.text("#plan-hash"))
		require.Contains(t, br.text("#playbook"), "edited by a human")
		br.do(chromedp.Click(chromedp.ID("approve")))
		br.waitText("#flash", "Approved")
		res := b.result(t, id)
		require.Equal(t, workflows.PhaseApplied, res.Outcome)
		require.Equal(t, st2.Plan.PlanHash, res.PlanHash, "the edited plan is the one applied")
	})

	t.Run("a viewer cannot approve", func(t *testing.T) {
		id, st := b.startTask(t, uiInput("rotate logs", 1, "alice", "victor"))
		br := b.browser(t)
		br.login("victor")
		br.openTask(id)
		br.waitText("#rights-reason", "Your role is viewer")
		require.Zero(t, br.count("form.decision"))
		// Even a hand-made POST with a valid CSRF token is refused.
		code := uiRun(br, chromedp.Evaluate[int](fmt.Sprintf(`fetch('/tasks/%s/decision', {method: 'POST', body: new URLSearchParams({
			csrf_token: document.querySelector('input[name=csrf_token]').value, decision: 'approve', plan_hash: %q})}).then(r => r.status)`,
			id, st.Plan.PlanHash), chromedp.EvalAwaitPromise))
		require.Equal(t, 403, code)
		now, err := b.status(t, id)
		require.NoError(t, err)
		require.Empty(t, now.Approval.Votes)
		require.True(t, now.Approval.Open)
	})

	t.Run("POST without the CSRF token gets 403", func(t *testing.T) {
		id, _ := b.startTask(t, uiInput("add a cron job", 1, "alice", "bob"))
		br := b.browser(t)
		br.login("alice")
		br.openTask(id)
		br.do(chromedp.Evaluate[chromedp.Void](`document.querySelector('#approve-form input[name=csrf_token]').remove()`),
			chromedp.Click(chromedp.ID("approve")))
		br.waitText("#message", "CSRF token is missing or wrong")
		require.Contains(t, br.text("h1"), "403")
		now, err := b.status(t, id)
		require.NoError(t, err)
		require.Empty(t, now.Approval.Votes)
		require.True(t, now.Approval.Open)
		require.Empty(t, b.fakes.eventsOf(id, "approval_denied", "alice"), "nothing reached the workflow")
	})

	t.Run("a stale plan_hash is refused", func(t *testing.T) {
		id, st := b.startTask(t, uiInput("harden sshd", 1, "alice", "bob"))
		br := b.browser(t)
		br.login("alice")
		br.openTask(id)
		// Meanwhile bob changes the plan through the API path (the update).
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h, err := b.temporal.Client.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: id, UpdateName: workflows.UpdateDecide,
			Args:         []any{workflows.Decision{Decision: workflows.DecisionModify, By: "bob", PlanHash: st.Plan.PlanHash, Playbook: uiPlaybook + "# bob\n"}},
			WaitForStage: client.WorkflowUpdateStageCompleted})
		require.NoError(t, err)
		require.NoError(t, h.Get(ctx, nil))
		st2 := b.waitStatus(t, id, "new plan awaiting", func(s workflows.Status) bool {
			return s.Phase == workflows.PhaseAwaiting && s.Plan.PlanHash != st.Plan.PlanHash
		})

		// Live updates warn the reader and disable the buttons...
		br.waitText("#live-banner", "plan changed")
		require.True(t, uiRun(br, chromedp.Evaluate[bool](`document.getElementById('approve').disabled`)))
		// ...and without them the server refuses the old plan_hash.
		br.enableForms()
		br.do(chromedp.Click(chromedp.ID("approve")))
		br.waitText("#error", "The plan changed since this page was loaded")

		now, err := b.status(t, id)
		require.NoError(t, err)
		require.True(t, now.Approval.Open)
		require.Empty(t, now.Approval.Votes)
		require.Equal(t, st2.Plan.PlanHash, now.Approval.PlanHash)
		require.NotEmpty(t, now.Approval.Denied)
		last := now.Approval.Denied[len(now.Approval.Denied)-1]
		require.Equal(t, "alice", last.By)
		require.Equal(t, st.Plan.PlanHash, last.PlanHash)
		require.Contains(t, last.Reason, "is not the current plan")
	})

	t.Run("submitting twice or from two tabs records one decision", func(t *testing.T) {
		id, _ := b.startTask(t, uiInput("install htop", 2, "alice", "bob", "carol"))
		br := b.browser(t)
		br.login("alice")
		br.openTask(id)
		other := br.tab()
		other.do(chromedp.Navigate(br.base+"/tasks/"+id), chromedp.WaitVisible(chromedp.ID("approve")))

		// The same form sent twice at once (a double click).
		got := uiRun(br, chromedp.Evaluate[[]string](`(async () => {
			const f = document.getElementById('approve-form');
			const send = () => fetch(f.action, {method: 'POST', body: new URLSearchParams(new FormData(f))});
			const rs = await Promise.all([send(), send()]);
			return rs.map(r => r.status + ' ' + new URL(r.url).search);
		})()`, chromedp.EvalAwaitPromise))
		require.Equal(t, []string{"200 ?done=vote-recorded", "200 ?done=vote-recorded"}, got)
		now, err := b.status(t, id)
		require.NoError(t, err)
		require.Len(t, now.Approval.Votes, 1)
		require.Len(t, b.fakes.eventsOf(id, "approval", "alice"), 1)

		// The other tab's form is another decision: the workflow refuses it.
		other.do(chromedp.Click(chromedp.ID("approve")))
		other.waitText("#error", "already voted on this plan")
		now, err = b.status(t, id)
		require.NoError(t, err)
		require.Len(t, now.Approval.Votes, 1)
		require.True(t, now.Approval.Open, "quorum 2 still needs another approver")
		br.do(chromedp.Navigate(br.base + "/tasks/" + id))
		br.waitText("#rights-reason", "You already approved this plan; 1 of 2")
	})

	t.Run("script injection in goal, file diff and comment renders as text", func(t *testing.T) {
		id, _ := b.startTask(t, uiInput("deploy motd "+uiXSS, 1, "alice", "bob"))
		br := b.browser(t)
		br.login("alice")
		br.do(chromedp.Navigate(br.base + "/tasks"))
		br.waitText(fmt.Sprintf(`tr[data-id=%q] a`, id), uiXSS)
		br.openTask(id)
		require.Equal(t, "deploy motd "+uiXSS, br.text("#goal"))
		br.do(chromedp.Click(chromedp.CSS("#file-2 summary")), chromedp.WaitVisible(chromedp.CSS("#file-2 pre.diff")))
		require.Contains(t, br.text("#file-2 pre.diff"), "+"+uiXSS)
		require.Equal(t, 1, br.count("script"), "only the page's own script element")
		br.noAlerts()
	})
}
