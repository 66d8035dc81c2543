package approvalsui

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/airlock-dev/airlock/workflows"
)

// pageBase is what the layout needs on every page.
type pageBase struct {
	Title string
	User  *identity
	CSRF  string
	Error string
	Flash string
}

type errorPage struct {
	pageBase
	Code    int
	Message string
}

const ctxCSRF = "airlock.csrf"

func (s *server) base(c *gin.Context, title string) pageBase {
	tok, _ := c.Get(ctxCSRF)
	t, _ := tok.(string)
	return pageBase{Title: title, User: who(c), CSRF: t}
}

func (s *server) render(c *gin.Context, code int, page string, data any) {
	t, ok := s.pages[page]
	if !ok {
		c.String(http.StatusInternalServerError, "no template %s", page)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", data); err != nil {
		s.log.Error("render page", "page", page, "error", err)
		c.String(http.StatusInternalServerError, "render error")
		return
	}
	c.Data(code, "text/html; charset=utf-8", buf.Bytes())
}

// withCSRFCookie makes sure the browser holds a CSRF cookie and puts the
// matching form token in the context.
func (s *server) withCSRFCookie(c *gin.Context) {
	v := ""
	if ck, err := c.Request.Cookie(s.auth.csrfNm); err == nil && len(ck.Value) >= 32 {
		v = ck.Value
	} else {
		nv, err := randomToken()
		if err != nil {
			s.fail(c, http.StatusInternalServerError, "no randomness")
			c.Abort()
			return
		}
		v = nv
		// A POST that arrives without the cookie still fails requireCSRF:
		// it reads the request's cookies, not this new one.
		http.SetCookie(c.Writer, s.auth.cookie(s.auth.csrfNm, v, time.Time{}))
	}
	c.Set(ctxCSRF, s.auth.csrfToken(v))
	c.Next()
}

// requireCSRF parses the form (413 when too large) and refuses a POST
// whose csrf_token does not match the cookie with 403.
func (s *server) requireCSRF(c *gin.Context) {
	if err := c.Request.ParseForm(); err != nil {
		if tooLarge(err) {
			s.fail(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("The form is larger than %d bytes.", s.maxBody))
		} else {
			s.fail(c, http.StatusBadRequest, "Bad form: "+err.Error())
		}
		c.Abort()
		return
	}
	if !s.auth.checkCSRF(c.Request, c.Request.PostForm.Get("csrf_token")) {
		s.log.Warn("csrf check failed", "path", c.Request.URL.Path, "client_ip", c.ClientIP())
		s.fail(c, http.StatusForbidden, "The form's CSRF token is missing or wrong. Reload the page and try again.")
		c.Abort()
		return
	}
	c.Next()
}

// requirePageUser resolves the trusted header or the session; without
// either, GETs go to the login page and POSTs get 401.
func (s *server) requirePageUser(c *gin.Context) {
	id := s.auth.fromHeader(c.Request)
	if id == nil {
		id = s.auth.fromSession(c.Request)
	}
	if id == nil {
		if c.Request.Method == http.MethodGet {
			c.Redirect(http.StatusSeeOther, "/login?next="+url.QueryEscape(c.Request.URL.RequestURI()))
		} else {
			s.fail(c, http.StatusUnauthorized, "Your session has ended. Log in again.")
		}
		c.Abort()
		return
	}
	c.Set(ctxIdentity, id)
	c.Next()
}

type loginPage struct {
	pageBase
	Next     string
	Username string
}

func safeNext(n string) string {
	if !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.ContainsAny(n, "\\\r\n") {
		return "/tasks"
	}
	return n
}

func (s *server) loginPage(c *gin.Context) {
	if id := s.auth.fromHeader(c.Request); id != nil {
		c.Redirect(http.StatusSeeOther, safeNext(c.Query("next")))
		return
	}
	s.render(c, http.StatusOK, "login", &loginPage{pageBase: s.base(c, "Log in"), Next: safeNext(c.Query("next"))})
}

func (s *server) loginPost(c *gin.Context) {
	name := strings.TrimSpace(c.PostForm("username"))
	pw := c.PostForm("password")
	next := safeNext(c.PostForm("next"))
	key := c.ClientIP() + "|" + strings.ToLower(name)
	page := &loginPage{pageBase: s.base(c, "Log in"), Next: next, Username: name}
	if blocked, left := s.auth.limiter.blocked(key); blocked {
		c.Header("Retry-After", strconv.Itoa(int(left.Seconds())+1))
		s.log.Warn("login rate limited", "user", name, "client_ip", c.ClientIP())
		page.Error = fmt.Sprintf("Too many failed logins. Try again in %d minutes.", int(left.Minutes())+1)
		s.render(c, http.StatusTooManyRequests, "login", page)
		return
	}
	id, err := s.auth.login(name, pw)
	if err != nil {
		s.log.Error("login: bad password hash in config", "user", name, "error", err)
	}
	if id == nil {
		s.auth.limiter.fail(key)
		s.log.Warn("login failed", "user", name, "client_ip", c.ClientIP())
		page.Error = "Wrong user name or password."
		s.render(c, http.StatusUnauthorized, "login", page)
		return
	}
	s.auth.limiter.reset(key)
	ck, err := s.auth.newSessionCookie(id.Name)
	if err != nil {
		s.fail(c, http.StatusInternalServerError, "could not start a session")
		return
	}
	http.SetCookie(c.Writer, ck)
	// A new CSRF secret with the new session.
	if v, err := randomToken(); err == nil {
		http.SetCookie(c.Writer, s.auth.cookie(s.auth.csrfNm, v, time.Time{}))
	}
	s.log.Info("login", "user", id.Name, "role", id.Role, "client_ip", c.ClientIP())
	c.Redirect(http.StatusSeeOther, next)
}

func (s *server) logout(c *gin.Context) {
	if id := s.auth.fromSession(c.Request); id != nil {
		s.auth.revoke(id.SID)
	}
	http.SetCookie(c.Writer, &http.Cookie{Name: s.auth.cookieNm, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.auth.secure, SameSite: http.SameSiteStrictMode})
	c.Redirect(http.StatusSeeOther, "/login")
}

type listPage struct {
	pageBase
	Filter  filter
	Phases  []string
	Sources []string
	Rows    []TaskRow
	Next    string
	Waiting int
}

func (s *server) listPage(c *gin.Context) {
	f := filter{Phase: c.Query("phase"), Source: c.Query("source"), Target: c.Query("target")}
	p := &listPage{pageBase: s.base(c, "Tasks"), Filter: f, Phases: Phases, Sources: Sources}
	code := http.StatusOK
	if err := f.validate(); err != nil {
		p.Error, code = err.Error(), http.StatusBadRequest
	} else {
		rows, next, err := s.listTasks(c.Request.Context(), f, c.Query("page"), who(c))
		if err != nil {
			p.Error, code = "Could not list tasks: "+err.Error(), http.StatusBadGateway
		}
		p.Rows, p.Next = rows, next
		for _, r := range rows {
			if r.WaitingForYou {
				p.Waiting++
			}
		}
	}
	s.render(c, code, "list", p)
}

type taskPage struct {
	pageBase
	T               *taskData
	St              *workflows.Status
	Rights          rights
	Nonce           string
	Diff            diffView
	Summary         []summaryRow
	Steps           []stepView
	StepsHidden     int
	Timeline        []phaseView
	Events          []eventView
	EventsSkipped   int
	Playbook        string
	PlaybookClipped bool
	PlaybookBytes   int
	Comment         string
	YourEdit        string // a modify refused as stale: the user's text, shown beside the current playbook
	// Questions from request_approval / request_egress (questions.go),
	// answered through POST /tasks/:id/answer.
	Questions []questionView
}

var doneMessages = map[string]string{
	"approved":        "Approved: the plan goes to apply.",
	"vote-recorded":   "Your approval is recorded. The task waits for the remaining approvals.",
	"rejected":        "Rejected: the plan will not be applied.",
	"modify-accepted": "Your edited playbook was accepted: it is verified again, then approval is asked again.",
	"answered":        "Your answer is recorded; the workflow acts on it.",
}

func (s *server) loadOr404(c *gin.Context, withEvents bool) *taskData {
	td, err := s.loadTask(c.Request.Context(), c.Param("id"), withEvents)
	if errors.Is(err, errNotFound) {
		s.fail(c, http.StatusNotFound, fmt.Sprintf("There is no task %q.", c.Param("id")))
		return nil
	}
	if err != nil {
		s.fail(c, http.StatusBadGateway, "Could not load the task: "+err.Error())
		return nil
	}
	return td
}

func (s *server) taskPage(c *gin.Context) {
	td := s.loadOr404(c, true)
	if td == nil {
		return
	}
	p := s.buildTaskPage(c, td)
	p.Flash = doneMessages[c.Query("done")]
	s.render(c, http.StatusOK, "task", p)
}

func (s *server) buildTaskPage(c *gin.Context, td *taskData) *taskPage {
	p := &taskPage{pageBase: s.base(c, "Task "+td.Row.WorkflowID), T: td, St: td.Status}
	p.Nonce, _ = randomToken()
	p.Events, p.EventsSkipped = eventViews(td.Events, inlineEventsMax, inlineEventDataMax)
	if st := td.Status; st != nil {
		p.Rights = decisionRights(who(c), st)
		p.Questions = questionViews(who(c), st, td.Events)
		p.Diff = parseDiff(st.DiffText)
		p.Diff.budget()
		p.Summary = summaryRows(st.DiffSummary)
		p.Steps, p.StepsHidden = stepViews(st.Steps)
		p.Timeline = timeline(st.Phases, td.Row.ClosedAt)
		if st.Plan != nil {
			p.PlaybookBytes = len(st.Plan.Playbook)
			p.Playbook, p.PlaybookClipped = clip(st.Plan.Playbook, inlinePlaybookMax)
		}
	}
	return p
}

func (s *server) modifyPage(c *gin.Context) {
	td := s.loadOr404(c, false)
	if td == nil {
		return
	}
	p := s.buildTaskPage(c, td)
	p.Title = "Modify " + td.Row.WorkflowID
	if td.Status != nil && td.Status.Plan != nil {
		p.Playbook = td.Status.Plan.Playbook
	}
	code := http.StatusOK
	if !p.Rights.Modify {
		code = http.StatusForbidden
	}
	s.render(c, code, "modify", p)
}

type textPage struct {
	pageBase
	TaskID string
	Head   string
	Note   string
	Lines  []string
}

func (s *server) filePage(c *gin.Context) {
	td := s.loadOr404(c, false)
	if td == nil {
		return
	}
	n, _ := strconv.Atoi(c.Param("n"))
	var f *diffFile
	if td.Status != nil {
		f = parseDiff(td.Status.DiffText).file(n)
	}
	if f == nil {
		s.fail(c, http.StatusNotFound, "No such file in this task's diff.")
		return
	}
	s.render(c, http.StatusOK, "text", &textPage{pageBase: s.base(c, f.Path), TaskID: td.Row.WorkflowID,
		Head: f.Action + " " + f.Path, Note: f.Desc, Lines: f.Diff})
}

// diffPage shows the whole captured diff text.
func (s *server) diffPage(c *gin.Context) {
	td := s.loadOr404(c, false)
	if td == nil {
		return
	}
	if td.Status == nil || td.Status.DiffText == "" {
		s.fail(c, http.StatusNotFound, "This task has no captured diff yet.")
		return
	}
	s.render(c, http.StatusOK, "text", &textPage{pageBase: s.base(c, "Diff "+td.Row.WorkflowID), TaskID: td.Row.WorkflowID,
		Head: "What changed", Lines: strings.Split(strings.TrimRight(td.Status.DiffText, "\n"), "\n")})
}

// stepsPage lists every step, each linking to its output.
func (s *server) stepsPage(c *gin.Context) {
	td := s.loadOr404(c, false)
	if td == nil {
		return
	}
	if td.Status == nil {
		s.fail(c, http.StatusBadGateway, td.StatusErr)
		return
	}
	s.render(c, http.StatusOK, "steps", &taskPage{pageBase: s.base(c, "Steps "+td.Row.WorkflowID), T: td, St: td.Status})
}

func (s *server) stepPage(c *gin.Context) {
	td := s.loadOr404(c, false)
	if td == nil {
		return
	}
	n, _ := strconv.Atoi(c.Param("n"))
	if td.Status == nil {
		s.fail(c, http.StatusBadGateway, td.StatusErr)
		return
	}
	for _, st := range td.Status.Steps {
		if st.N == n {
			note := fmt.Sprintf("exit %d, %d ms, %d bytes of output", st.ExitCode, st.DurationMs, st.TotalBytes)
			if st.OutputRef != "" {
				note += "; history keeps the first bytes, the full output is stored as " + st.OutputRef
			}
			s.render(c, http.StatusOK, "text", &textPage{pageBase: s.base(c, "Step "+strconv.Itoa(n)), TaskID: td.Row.WorkflowID,
				Head: fmt.Sprintf("Step %d: %s %s", n, st.Tool, st.Args), Note: note, Lines: strings.Split(st.Output, "\n")})
			return
		}
	}
	s.fail(c, http.StatusNotFound, "No such step.")
}

func (s *server) playbookText(c *gin.Context) {
	td := s.loadOr404(c, false)
	if td == nil {
		return
	}
	if td.Status == nil || td.Status.Plan == nil {
		s.fail(c, http.StatusNotFound, "This task has no playbook yet.")
		return
	}
	c.Header("Content-Disposition", `inline; filename="playbook.yml"`)
	c.Data(http.StatusOK, "text/plain; charset=utf-8", []byte(td.Status.Plan.Playbook))
}

func (s *server) auditPage(c *gin.Context) {
	td := s.loadOr404(c, true)
	if td == nil {
		return
	}
	p := &taskPage{pageBase: s.base(c, "Audit "+td.Row.WorkflowID), T: td, St: td.Status}
	p.Events, _ = eventViews(td.Events, 0, 4096)
	s.render(c, http.StatusOK, "audit", p)
}

// decisionPost turns a form into a Decision by the logged-in approver and
// sends it with the plan_hash the page showed.
func (s *server) decisionPost(c *gin.Context) {
	id := who(c)
	if !id.canDecide() {
		s.fail(c, http.StatusForbidden, "Your role is viewer: you cannot decide on tasks.")
		return
	}
	d := workflows.Decision{
		Decision: c.PostForm("decision"), By: id.By, Comment: strings.TrimSpace(c.PostForm("comment")),
		PlanHash: c.PostForm("plan_hash"), Override: c.PostForm("override_verification") == "on",
	}
	if d.Decision == workflows.DecisionModify {
		d.Playbook = strings.ReplaceAll(c.PostForm("playbook"), "\r\n", "\n")
	}
	if code, msg := checkDecisionInput(d); code != 0 {
		s.fail(c, code, msg)
		return
	}
	res, code := s.submitDecision(c, d, updateIDFor(c.Param("id"), id.By, d.Decision, c.PostForm("nonce")))
	if code == http.StatusNotFound {
		return
	}
	if res.Code == "ok" {
		c.Redirect(http.StatusSeeOther, "/tasks/"+url.PathEscape(c.Param("id"))+"?done="+url.QueryEscape(res.Result.Outcome))
		return
	}
	td := s.loadOr404(c, true)
	if td == nil {
		return
	}
	p := s.buildTaskPage(c, td)
	p.Error = res.Message
	page := "task"
	if d.Decision == workflows.DecisionModify {
		page, p.Comment = "modify", d.Comment
		p.Title = "Modify " + td.Row.WorkflowID
		p.Playbook = d.Playbook
		if res.Code == "stale_plan" && td.Status != nil && td.Status.Plan != nil {
			// Never resubmit an edit of the old plan against the new hash
			// by accident: offer the current playbook, show theirs beside it.
			p.Playbook, p.YourEdit = td.Status.Plan.Playbook, d.Playbook
		}
	}
	s.render(c, res.HTTPCode, page, p)
}

// checkDecisionInput refuses what the workflow would refuse anyway and
// what must not reach history (oversized playbooks).
func checkDecisionInput(d workflows.Decision) (int, string) {
	switch d.Decision {
	case workflows.DecisionApprove, workflows.DecisionReject, workflows.DecisionModify:
	default:
		return http.StatusBadRequest, fmt.Sprintf("Unknown decision %q.", d.Decision)
	}
	if d.PlanHash == "" {
		return http.StatusBadRequest, "The decision must name the plan_hash that was reviewed."
	}
	if len(d.Playbook) > MaxPlaybookBytes {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("The edited playbook is larger than %d bytes.", MaxPlaybookBytes)
	}
	if len(d.Comment) > 4000 {
		return http.StatusRequestEntityTooLarge, "The comment is longer than 4000 characters."
	}
	if d.Decision == workflows.DecisionReject && d.Comment == "" {
		return http.StatusUnprocessableEntity, "A rejection needs a comment saying why."
	}
	if d.Decision == workflows.DecisionModify && strings.TrimSpace(d.Playbook) == "" {
		return http.StatusUnprocessableEntity, "Modify needs the edited playbook."
	}
	return 0, ""
}

// submitDecision checks that the task exists (404 otherwise, already
// answered), sends the update and records the decision latency.
func (s *server) submitDecision(c *gin.Context, d workflows.Decision, updateID string) (decideOutcome, int) {
	ctx := c.Request.Context()
	wid := c.Param("id")
	td, err := s.loadTask(ctx, wid, false)
	if errors.Is(err, errNotFound) {
		s.fail(c, http.StatusNotFound, fmt.Sprintf("There is no task %q.", wid))
		return decideOutcome{}, http.StatusNotFound
	}
	if err != nil {
		return decideOutcome{Code: "error", HTTPCode: http.StatusBadGateway, Message: "Could not load the task: " + err.Error()}, http.StatusBadGateway
	}
	if td.Row.Status != "Running" {
		return decideOutcome{Code: "not_waiting", HTTPCode: http.StatusConflict,
			Message: "The task has finished (phase " + td.Row.Phase + "), so it is not waiting for approval and no decision was recorded."}, http.StatusConflict
	}
	out := s.decide(ctx, wid, d, updateID)
	s.log.Info("decision", "workflow_id", wid, "by", d.By, "decision", d.Decision, "plan_hash", d.PlanHash,
		"result", out.Code, "outcome", out.Result.Outcome, "update_id", updateID)
	if out.Code == "ok" && td.Status != nil {
		if since := awaitingSince(td.Status); !since.IsZero() {
			s.metrics.decisionLatency.WithLabelValues(d.Decision).Observe(time.Since(since).Seconds())
		}
	}
	return out, out.HTTPCode
}
