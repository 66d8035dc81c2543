package approvalsui

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/airlock-dev/airlock/workflows"
)

// requireAPIUser accepts a bearer token; for GETs it also accepts the
// page's session or trusted header (the page's live updates use it).
// POSTs need a bearer token: a cookie alone would invite CSRF.
func (s *server) requireAPIUser(c *gin.Context) {
	id := s.auth.bearer(c.Request)
	if id == nil && c.Request.Method == http.MethodGet {
		if id = s.auth.fromHeader(c.Request); id == nil {
			id = s.auth.fromSession(c.Request)
		}
	}
	if id == nil {
		c.Header("WWW-Authenticate", `Bearer realm="airlock"`)
		s.fail(c, http.StatusUnauthorized, "a valid bearer token is required")
		c.Abort()
		return
	}
	c.Set(ctxIdentity, id)
	c.Next()
}

func (s *server) apiList(c *gin.Context) {
	f := filter{Phase: c.Query("phase"), Source: c.Query("source"), Target: c.Query("target")}
	if err := f.validate(); err != nil {
		s.fail(c, http.StatusBadRequest, err.Error())
		return
	}
	rows, next, err := s.listTasks(c.Request.Context(), f, c.Query("page_token"), who(c))
	if err != nil {
		s.fail(c, http.StatusBadGateway, err.Error())
		return
	}
	c.JSON(http.StatusOK, gin.H{"tasks": rows, "next_page_token": next})
}

// apiRights is rights in JSON.
type apiRights struct {
	Approve      bool   `json:"approve"`
	Reject       bool   `json:"reject"`
	Modify       bool   `json:"modify"`
	NeedOverride bool   `json:"need_override,omitempty"`
	Reason       string `json:"reason,omitempty"`
}

func (s *server) apiTask(c *gin.Context) {
	td, err := s.loadTask(c.Request.Context(), c.Param("id"), true)
	if errors.Is(err, errNotFound) {
		s.fail(c, http.StatusNotFound, fmt.Sprintf("no task %q", c.Param("id")))
		return
	}
	if err != nil {
		s.fail(c, http.StatusBadGateway, err.Error())
		return
	}
	out := gin.H{"task": td.Row, "status": td.Status, "events": td.Events}
	if td.StatusErr != "" {
		out["status_error"] = td.StatusErr
	}
	if td.EventsErr != "" {
		out["events_error"] = td.EventsErr
	}
	if td.Events == nil {
		out["events"] = []Event{}
	}
	if td.Status != nil {
		r := decisionRights(who(c), td.Status)
		out["you"] = apiRights{Approve: r.Approve, Reject: r.Reject, Modify: r.Modify, NeedOverride: r.NeedOverride, Reason: r.Reason}
		out["questions"] = apiQuestions(who(c), td.Status, td.Events)
	}
	c.JSON(http.StatusOK, out)
}

// decodeJSON reads a strict JSON body (no unknown fields, size-capped)
// into v; on failure it has answered the request and returns false.
func (s *server) decodeJSON(c *gin.Context, v any) bool {
	dec := json.NewDecoder(c.Request.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if tooLarge(err) {
			s.fail(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", s.maxBody))
		} else {
			s.fail(c, http.StatusBadRequest, "bad JSON body: "+err.Error())
		}
		return false
	}
	return true
}

// decisionBody is the JSON body of POST /api/v1/tasks/{id}/decision. The
// decider is the token's user, never a field of the body.
type decisionBody struct {
	Decision string `json:"decision"`
	Comment  string `json:"comment"`
	PlanHash string `json:"plan_hash"`
	Playbook string `json:"playbook"`
	Override bool   `json:"override_verification"`
}

func (s *server) apiDecision(c *gin.Context) {
	id := who(c)
	if !id.canDecide() {
		s.fail(c, http.StatusForbidden, "role viewer cannot decide")
		return
	}
	var b decisionBody
	if !s.decodeJSON(c, &b) {
		return
	}
	d := workflows.Decision{Decision: b.Decision, By: id.By, Comment: b.Comment, PlanHash: b.PlanHash, Override: b.Override}
	if d.Decision == workflows.DecisionModify {
		d.Playbook = b.Playbook
	}
	if code, msg := checkDecisionInput(d); code != 0 {
		s.fail(c, code, msg)
		return
	}
	res, code := s.submitDecision(c, d, updateIDFor(c.Param("id"), id.By, d.Decision, c.GetHeader("Idempotency-Key")))
	if code == http.StatusNotFound {
		return
	}
	if res.Code != "ok" {
		c.JSON(res.HTTPCode, gin.H{"error": res.Code, "message": res.Message})
		return
	}
	c.JSON(http.StatusOK, gin.H{"accepted": res.Result.Accepted, "outcome": res.Result.Outcome,
		"votes": res.Result.Votes, "quorum": res.Result.Quorum, "message": res.Message})
}

// liveStatus is the bounded part of Status that the SSE stream sends.
type liveStatus struct {
	Phase        string                `json:"phase"`
	Phases       []workflows.PhaseMark `json:"phases"`
	Steps        []liveStep            `json:"steps"`
	PlanHash     string                `json:"plan_hash,omitempty"`
	Verification string                `json:"verification,omitempty"`
	Open         bool                  `json:"open"`
	Votes        int                   `json:"votes"`
	Quorum       int                   `json:"quorum"`
	ExpiresAt    time.Time             `json:"expires_at,omitzero"`
	Error        string                `json:"error,omitempty"`
}

type liveStep struct {
	N          int    `json:"n"`
	Tool       string `json:"tool"`
	Args       string `json:"args"`
	ExitCode   int    `json:"exit_code"`
	Output     string `json:"output,omitempty"` // tail
	DurationMs int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

func live(st *workflows.Status) liveStatus {
	l := liveStatus{Phase: st.Phase, Phases: st.Phases, Steps: make([]liveStep, 0, len(st.Steps)), Error: st.Error}
	views, _ := stepViews(st.Steps)
	for _, sv := range views {
		l.Steps = append(l.Steps, liveStep{N: sv.N, Tool: sv.Tool, Args: sv.Args, ExitCode: sv.ExitCode,
			Output: sv.Shown, DurationMs: sv.DurationMs, Error: sv.StepRecord.Error})
	}
	if st.Plan != nil {
		l.PlanHash = st.Plan.PlanHash
	}
	if st.Verification != nil {
		l.Verification = st.Verification.Status
	}
	if g := st.Approval; g != nil {
		l.Open, l.Votes, l.Quorum, l.ExpiresAt = g.Open, len(g.Votes), g.Policy.Quorum, g.ExpiresAt
	}
	return l
}

// apiEvents streams a task as server-sent events: `status` when the
// bounded status changes, `audit` for each new audit event, `end` when the
// task reaches a final phase. It polls the status query and the store.
func (s *server) apiEvents(c *gin.Context) {
	ctx := c.Request.Context()
	wid := c.Param("id")
	if _, err := s.loadTask(ctx, wid, false); err != nil {
		if errors.Is(err, errNotFound) {
			s.fail(c, http.StatusNotFound, fmt.Sprintf("no task %q", wid))
		} else {
			s.fail(c, http.StatusBadGateway, err.Error())
		}
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	c.Status(http.StatusOK)
	c.Writer.Flush()

	var lastSum [32]byte
	seen, seq := 0, 0
	lastWrite := time.Now()
	send := func(event string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		seq++
		if _, err := fmt.Fprintf(c.Writer, "id: %d\nevent: %s\ndata: %s\n\n", seq, event, b); err != nil {
			return false
		}
		c.Writer.Flush()
		lastWrite = time.Now()
		return true
	}
	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := s.queryStatus(qctx, wid)
		cancel()
		final := false
		if err == nil {
			l := live(st)
			b, _ := json.Marshal(l)
			if sum := sha256.Sum256(b); sum != lastSum {
				lastSum = sum
				if !send("status", l) {
					return
				}
			}
			final = isFinal(st.Phase)
		} else if ctx.Err() == nil {
			s.log.Warn("sse status query failed", "workflow_id", wid, "error", err)
		}
		if s.events != nil {
			if evs, err := s.events.ListEvents(ctx, wid); err == nil && len(evs) > seen {
				for _, e := range evs[seen:] {
					ev := eventView{Event: e, Text: eventText(e.Data, 2048)}
					ev.Data = nil
					if !send("audit", ev) {
						return
					}
				}
				seen = len(evs)
			}
		}
		if final {
			send("end", gin.H{"phase": st.Phase})
			return
		}
		if time.Since(lastWrite) > 15*time.Second {
			if _, err := fmt.Fprint(c.Writer, ": keep-alive\n\n"); err != nil {
				return
			}
			c.Writer.Flush()
			lastWrite = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
