package approvalsui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/workflows"
)

// Questions from request_approval and request_egress (a runbook step or the
// LLM agent) are shown on the task page and answered with the workflow's
// `answer` update, so the page gets the workflow's verdict synchronously.

const maxAnswerComment = 4000

// questionView is one question as the task page shows it.
type questionView struct {
	workflows.Question
	Pending bool
	Egress  bool
	Answer  bool   // the caller is offered the answer form
	Note    string // why not, or a warning next to the form
}

// questionPolicy is who may answer a task's questions, as far as the page
// can tell: the approvers come from the open gate or from the
// agent_question audit event (the workflow does not expose its policy
// before approval is asked). The workflow decides for real.
type questionPolicy struct {
	Approvers []string
	Known     bool
	SelfOK    bool // known to allow self-approval
	Requester string
}

func policyFor(st *workflows.Status, evs []Event) questionPolicy {
	p := questionPolicy{Requester: st.Origin.By}
	if g := st.Approval; g != nil {
		p.Approvers, p.Known, p.SelfOK = g.Policy.Approvers, true, g.Policy.AllowSelfApproval
		return p
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Kind != "agent_question" {
			continue
		}
		if list, ok := evs[i].Data["approvers"].([]any); ok {
			for _, a := range list {
				if s, ok := a.(string); ok {
					p.Approvers = append(p.Approvers, s)
				}
			}
			p.Known = true
			return p
		}
	}
	return p
}

// questionRight says whether who may answer q, and why not. The
// question's own policy (from the status query) wins over p, which comes
// from the gate or the store's events and may not be there yet.
func questionRight(who *identity, q workflows.Question, p questionPolicy) (bool, string) {
	if len(q.Approvers) > 0 {
		p.Approvers, p.Known, p.SelfOK = q.Approvers, true, q.AllowSelfApproval
	}
	switch {
	case q.Status != "pending":
		return false, ""
	case who == nil:
		return false, "Log in to answer."
	case who.Role != RoleApprover:
		return false, "Your role is viewer: you can follow this question but not answer it."
	case p.Known && !slices.Contains(p.Approvers, who.By):
		return false, fmt.Sprintf("You (%s) are not an approver of this task. Approvers: %s.", who.By, strings.Join(p.Approvers, ", "))
	case q.Kind == "egress" && who.By == p.Requester && !p.SelfOK:
		return true, "You started this task: unless its policy allows self-approval, the workflow refuses your answer to an egress request."
	}
	return true, ""
}

// mayAnswerNow is "waiting for you" for questions: a pending question the
// caller is known to be allowed to answer.
func mayAnswerNow(who *identity, st *workflows.Status, evs []Event) bool {
	if st == nil || st.Agent == nil {
		return false
	}
	p := policyFor(st, evs)
	for _, q := range st.Agent.Questions {
		if ok, note := questionRight(who, q, p); ok && (p.Known || len(q.Approvers) > 0) && note == "" {
			return true
		}
	}
	return false
}

func pendingQuestions(st *workflows.Status) int {
	n := 0
	if st != nil && st.Agent != nil {
		for _, q := range st.Agent.Questions {
			if q.Status == "pending" {
				n++
			}
		}
	}
	return n
}

func questionViews(who *identity, st *workflows.Status, evs []Event) []questionView {
	if st == nil || st.Agent == nil || len(st.Agent.Questions) == 0 {
		return nil
	}
	p := policyFor(st, evs)
	out := make([]questionView, 0, len(st.Agent.Questions))
	// Pending first, then the newest answered.
	for _, pending := range []bool{true, false} {
		for i := len(st.Agent.Questions) - 1; i >= 0; i-- {
			q := st.Agent.Questions[i]
			if (q.Status == "pending") != pending {
				continue
			}
			v := questionView{Question: q, Pending: pending, Egress: q.Kind == "egress"}
			v.Answer, v.Note = questionRight(who, q, p)
			out = append(out, v)
		}
	}
	return out
}

// answerOutcome classifies what happened to an answer.
type answerOutcome struct {
	Question workflows.Question
	Code     string // ok | not_pending | not_running | denied | timeout | error
	Message  string
	HTTPCode int
}

// sendAnswer sends the `answer` update and waits for the verdict.
// updateID makes a double submit of the same form one answer.
func (s *server) sendAnswer(ctx context.Context, wid string, a workflows.Answer, updateID string) answerOutcome {
	uctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h, err := s.temporal.UpdateWorkflow(uctx, client.UpdateWorkflowOptions{
		UpdateID: updateID, WorkflowID: wid, UpdateName: workflows.UpdateAnswer,
		Args: []any{a}, WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	var q workflows.Question
	if err == nil {
		err = h.Get(uctx, &q)
	}
	if err == nil {
		return answerOutcome{Question: q, Code: "ok", HTTPCode: http.StatusOK,
			Message: fmt.Sprintf("Your answer %q to %s is recorded.", q.Choice, q.ID)}
	}
	return classifyAnswerError(fmt.Errorf("answer update: %w", err), a.QuestionID)
}

func classifyAnswerError(err error, qid string) answerOutcome {
	msg := err.Error()
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		msg = app.Message()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return answerOutcome{Code: "timeout", HTTPCode: http.StatusGatewayTimeout, Message: "Temporal did not answer in time; the control worker may be down. Nothing is known to be recorded: reload and check the task."}
	case isNotFound(err), strings.Contains(msg, "already completed"):
		return answerOutcome{Code: "not_running", HTTPCode: http.StatusConflict, Message: "The task has finished, so no answer was recorded."}
	case strings.Contains(msg, "no pending question"), strings.Contains(msg, "no question"),
		strings.Contains(msg, " is answered"), strings.Contains(msg, " is expired"), strings.Contains(msg, " is cancelled"):
		return answerOutcome{Code: "not_pending", HTTPCode: http.StatusConflict,
			Message: fmt.Sprintf("Question %s is not waiting for an answer (any more), so nothing was recorded. Reload to see who answered it.", qid)}
	case app != nil && app.Type() == "AnswerDenied":
		return answerOutcome{Code: "denied", HTTPCode: http.StatusForbidden, Message: "Refused by the workflow: " + msg}
	}
	return answerOutcome{Code: "error", HTTPCode: http.StatusBadGateway, Message: "The answer could not be delivered: " + msg}
}

// checkAnswerInput refuses what must not reach the workflow.
func checkAnswerInput(a workflows.Answer) (int, string) {
	switch {
	case a.QuestionID == "" || len(a.QuestionID) > 64:
		return http.StatusBadRequest, "The answer must name the question (question_id)."
	case a.Choice == "" || len(a.Choice) > 200:
		return http.StatusBadRequest, "The answer must name one of the question's options (choice)."
	case len(a.Comment) > maxAnswerComment:
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("The comment is longer than %d characters.", maxAnswerComment)
	}
	return 0, ""
}

// submitAnswer checks that the task exists and runs, then sends the answer.
// A 404 has been written already when it returns http.StatusNotFound.
func (s *server) submitAnswer(c *gin.Context, a workflows.Answer, updateID string) answerOutcome {
	ctx := c.Request.Context()
	wid := c.Param("id")
	td, err := s.loadTask(ctx, wid, false)
	if errors.Is(err, errNotFound) {
		s.fail(c, http.StatusNotFound, fmt.Sprintf("There is no task %q.", wid))
		return answerOutcome{HTTPCode: http.StatusNotFound}
	}
	if err != nil {
		return answerOutcome{Code: "error", HTTPCode: http.StatusBadGateway, Message: "Could not load the task: " + err.Error()}
	}
	if td.Row.Status != "Running" {
		return answerOutcome{Code: "not_running", HTTPCode: http.StatusConflict,
			Message: "The task has finished (phase " + td.Row.Phase + "), so no answer was recorded."}
	}
	out := s.sendAnswer(ctx, wid, a, updateID)
	s.log.Info("answer", "workflow_id", wid, "by", a.By, "question_id", a.QuestionID, "choice", a.Choice,
		"result", out.Code, "update_id", updateID)
	return out
}

// answerPost is the page's answer form: one button per option.
func (s *server) answerPost(c *gin.Context) {
	id := who(c)
	if !id.canDecide() {
		s.fail(c, http.StatusForbidden, "Your role is viewer: you cannot answer questions.")
		return
	}
	a := workflows.Answer{QuestionID: c.PostForm("question_id"), By: id.By, Choice: c.PostForm("choice"),
		Comment: strings.TrimSpace(c.PostForm("comment"))}
	if code, msg := checkAnswerInput(a); code != 0 {
		s.fail(c, code, msg)
		return
	}
	out := s.submitAnswer(c, a, updateIDFor(c.Param("id"), id.By, "answer\x00"+a.QuestionID+"\x00"+a.Choice, c.PostForm("nonce")))
	if out.HTTPCode == http.StatusNotFound {
		return
	}
	if out.Code == "ok" {
		c.Redirect(http.StatusSeeOther, "/tasks/"+url.PathEscape(c.Param("id"))+"?done=answered#questions")
		return
	}
	td := s.loadOr404(c, true)
	if td == nil {
		return
	}
	p := s.buildTaskPage(c, td)
	p.Error = out.Message
	s.render(c, out.HTTPCode, "task", p)
}

// answerBody is the JSON body of POST /api/v1/tasks/{id}/answer. The
// answerer is the token's user, never a field of the body.
type answerBody struct {
	QuestionID string `json:"question_id"`
	Choice     string `json:"choice"`
	Comment    string `json:"comment"`
}

func (s *server) apiAnswer(c *gin.Context) {
	id := who(c)
	if !id.canDecide() {
		s.fail(c, http.StatusForbidden, "role viewer cannot answer questions")
		return
	}
	var b answerBody
	if !s.decodeJSON(c, &b) {
		return
	}
	a := workflows.Answer{QuestionID: b.QuestionID, By: id.By, Choice: b.Choice, Comment: strings.TrimSpace(b.Comment)}
	if code, msg := checkAnswerInput(a); code != 0 {
		s.fail(c, code, msg)
		return
	}
	out := s.submitAnswer(c, a, updateIDFor(c.Param("id"), id.By, "answer\x00"+a.QuestionID+"\x00"+a.Choice, c.GetHeader("Idempotency-Key")))
	if out.HTTPCode == http.StatusNotFound {
		return
	}
	if out.Code != "ok" {
		c.JSON(out.HTTPCode, gin.H{"error": out.Code, "message": out.Message})
		return
	}
	c.JSON(http.StatusOK, gin.H{"question": out.Question, "message": out.Message})
}

// apiQuestion is a question in GET /api/v1/tasks/{id}, with the caller's
// right to answer it.
type apiQuestion struct {
	workflows.Question
	MayAnswer bool   `json:"may_answer"`
	Note      string `json:"note,omitempty"`
}

func apiQuestions(who *identity, st *workflows.Status, evs []Event) []apiQuestion {
	out := []apiQuestion{}
	for _, v := range questionViews(who, st, evs) {
		out = append(out, apiQuestion{Question: v.Question, MayAnswer: v.Answer, Note: v.Note})
	}
	return out
}

// mayAnswerTask is mayAnswerNow for the task list: the audit events are
// read only for tasks with a pending question and no open gate.
func (s *server) mayAnswerTask(ctx context.Context, who *identity, st *workflows.Status, wid string) bool {
	var evs []Event
	if st.Approval == nil && s.events != nil {
		var err error
		if evs, err = s.events.ListEvents(ctx, wid); err != nil {
			s.log.Warn("audit events for the task list failed", "workflow_id", wid, "error", err)
			return false
		}
	}
	return mayAnswerNow(who, st, evs)
}
