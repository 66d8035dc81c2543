package approvalsui

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/airlock-dev/airlock/activities/playbook"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/workflows"
)

const (
	planHash  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	xss       = `<script>alert("pwned")</script>`
	xssEscape = `&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;`
)

// Test secrets. Hashes are computed once per run (bcrypt at MinCost).
var (
	pwHash      = mustHash("alice-pw")
	argonHash   = mustArgon("bob-pw")
	viewerHash  = mustHash("victor-pw")
	daveHash    = mustHash("dave-pw")
	approverTok = "tok-approver-secret"
	viewerTok   = "tok-viewer-secret"
)

func mustHash(pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
}

func mustArgon(pw string) string {
	h, err := HashArgon2id(pw)
	if err != nil {
		panic(err)
	}
	return h
}

func sum(s string) string { b := sha256.Sum256([]byte(s)); return hex.EncodeToString(b[:]) }

type bundle struct {
	temporal *fakeTemporal
	events   *fakeEvents
	srv      *httptest.Server
	cfg      config.Serve
}

type option func(*config.Serve)

// setup starts the real handler on httptest with a fake Temporal holding
// task-1: waiting for alice or bob (quorum 1), started by dave, with
// script injection in its goal, diff and a refused attempt's reason.
func setup(t *testing.T, opts ...option) *bundle {
	t.Helper()
	cfg := config.Serve{
		InsecureCookie: true,
		Users: []config.User{
			{Name: "alice", Hash: pwHash, Role: RoleApprover},
			{Name: "bob", Hash: argonHash, Role: RoleApprover},
			{Name: "victor", Hash: viewerHash, Role: RoleViewer},
			{Name: "dave", Hash: daveHash, Role: RoleApprover},
		},
		Tokens: []config.Token{
			{User: "alice", SHA256: sum(approverTok), Role: RoleApprover},
			{User: "victor", SHA256: sum(viewerTok), Role: RoleViewer},
		},
		MaxBodyBytes: 512 << 10,
	}
	for _, o := range opts {
		o(&cfg)
	}
	b := &bundle{temporal: newFakeTemporal(), events: &fakeEvents{byID: map[string][]Event{}}, cfg: cfg}
	b.temporal.add(waitingStatus("task-1", "dave", 1), true)
	b.events.byID["task-1"] = []Event{
		{ID: 1, WorkflowID: "task-1", Kind: "task_started", Actor: "dave", At: time.Now(), Data: map[string]any{"goal": "configure nginx " + xss}},
		{ID: 2, WorkflowID: "task-1", Kind: "approval_denied", Actor: "mallory", At: time.Now(), Data: map[string]any{"comment": xss, "reason": "not an approver"}},
	}
	h, err := New(Deps{Temporal: b.temporal, Events: b.events, Config: cfg, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	require.NoError(t, err)
	b.srv = httptest.NewServer(h)
	t.Cleanup(b.srv.Close)
	return b
}

func waitingStatus(id, by string, quorum int) workflows.Status {
	now := time.Now().Add(-time.Hour)
	return workflows.Status{
		WorkflowID:  id,
		Goal:        "configure nginx " + xss,
		Origin:      workflows.Origin{Via: "cli", By: by},
		Target:      workflows.TargetSpec{Env: "prod", Hosts: []string{"prod-web-1"}},
		Phase:       workflows.PhaseAwaiting,
		Phases:      []workflows.PhaseMark{{Phase: workflows.PhaseValidating, At: now}, {Phase: workflows.PhaseAwaiting, At: now.Add(time.Minute)}},
		Steps:       []workflows.StepRecord{{N: 1, Tool: "run", Args: "apt-get install -y nginx", Output: "Setting up nginx " + xss}},
		DiffSummary: map[string]int{"files_added": 1, "files_modified": 1, "packages_installed": 1},
		DiffText: "Packages (1)\n  + nginx 1.22.1-9 \nFiles (2)\n" +
			"  A /etc/nginx/sites-enabled/app  file 0644 0:0 12 B\n" +
			"  M /etc/motd  [content] file 0644 0:0 3 B -> file 0644 0:0 40 B\n" +
			"      --- a/etc/motd\n      +++ b/etc/motd\n      @@ -1 +1 @@\n      -hi\n      +" + xss + "\n" +
			"Summary: packages +1 -0 ~0, files +1 ~1 -0 (0 folded, 0 ignored), services 0, users 0, groups 0, cron 0, sysctl 0\n",
		Plan:         &playbook.Plan{PlanHash: planHash, BundleRef: "sha256:bundle", Playbook: "- hosts: all\n  tasks: []\n", Tasks: 2},
		Verification: &sandbox.VerifyResult{Status: "verified"},
		Approval: &workflows.Gate{
			Policy:      workflows.ApprovalPolicy{Approvers: []string{"alice", "bob", "dave"}, Quorum: quorum},
			RequestedBy: by, PlanHash: planHash, Verified: true, Open: true, ExpiresAt: time.Now().Add(71 * time.Hour),
			Denied: []workflows.DeniedAttempt{{By: "mallory", Decision: "approve", PlanHash: "x", Reason: "mallory is not an approver " + xss}},
		},
	}
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t   *testing.T
	c   *http.Client
	url string
}

func (b *bundle) browser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &browser{t: t, url: b.srv.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type resp struct {
	code int
	body string
	hdr  http.Header
}

func (br *browser) do(req *http.Request) resp {
	br.t.Helper()
	r, err := br.c.Do(req)
	require.NoError(br.t, err)
	defer r.Body.Close()
	body, err := io.ReadAll(r.Body)
	require.NoError(br.t, err)
	return resp{code: r.StatusCode, body: string(body), hdr: r.Header}
}

func (br *browser) get(path string) resp {
	br.t.Helper()
	req, err := http.NewRequest(http.MethodGet, br.url+path, nil)
	require.NoError(br.t, err)
	return br.do(req)
}

func (br *browser) post(path string, form url.Values) resp {
	br.t.Helper()
	req, err := http.NewRequest(http.MethodPost, br.url+path, strings.NewReader(form.Encode()))
	require.NoError(br.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return br.do(req)
}

var csrfRe = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
var nonceRe = regexp.MustCompile(`name="nonce" value="([^"]+)"`)

func field(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	require.NotNil(t, m, "field %s not in page", re)
	return m[1]
}

// login logs in through the form and returns the CSRF token of the new
// session.
func (br *browser) login(user, pw string) resp {
	br.t.Helper()
	page := br.get("/login")
	require.Equal(br.t, http.StatusOK, page.code)
	return br.post("/login", url.Values{"csrf_token": {field(br.t, csrfRe, page.body)}, "username": {user}, "password": {pw}, "next": {"/tasks"}})
}

func (br *browser) mustLogin(user, pw string) {
	br.t.Helper()
	r := br.login(user, pw)
	require.Equal(br.t, http.StatusSeeOther, r.code, r.body)
}

// decisionForm loads the task page and returns a filled form.
func (br *browser) decisionForm(id, decision string) url.Values {
	br.t.Helper()
	page := br.get("/tasks/" + id)
	require.Equal(br.t, http.StatusOK, page.code, page.body)
	return url.Values{"csrf_token": {field(br.t, csrfRe, page.body)}, "nonce": {field(br.t, nonceRe, page.body)},
		"plan_hash": {planHash}, "decision": {decision}}
}
