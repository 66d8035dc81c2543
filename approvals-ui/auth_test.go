package approvalsui

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/config"
)

func TestPasswordHashes(t *testing.T) {
	for _, tc := range []struct{ hash, pw string }{{pwHash, "alice-pw"}, {argonHash, "bob-pw"}} {
		ok, err := checkPassword(tc.hash, tc.pw)
		require.NoError(t, err)
		require.True(t, ok)
		ok, err = checkPassword(tc.hash, tc.pw+"x")
		require.NoError(t, err)
		require.False(t, ok)
	}
	_, err := checkPassword("plain", "x")
	require.Error(t, err)
	_, err = checkPassword("$argon2id$v=19$m=1,t=1$AAAA$AAAA", "x")
	require.Error(t, err, "malformed argon2id hash")
}

func TestLoginWithBcryptAndArgon2id(t *testing.T) {
	b := setup(t)
	for _, u := range []struct{ name, pw string }{{"alice", "alice-pw"}, {"bob", "bob-pw"}} {
		br := b.browser(t)
		r := br.login(u.name, u.pw)
		require.Equal(t, http.StatusSeeOther, r.code, r.body)
		require.Equal(t, "/tasks", r.hdr.Get("Location"))
		ck := r.hdr.Values("Set-Cookie")
		require.NotEmpty(t, ck)
		joined := strings.Join(ck, "\n")
		require.Contains(t, joined, "airlock_session=")
		require.Contains(t, joined, "HttpOnly")
		require.Contains(t, joined, "SameSite=Strict")
		page := br.get("/tasks")
		require.Equal(t, http.StatusOK, page.code)
		require.Contains(t, page.body, u.name)
	}
	r := b.browser(t).login("alice", "wrong")
	require.Equal(t, http.StatusUnauthorized, r.code)
	require.Contains(t, r.body, "Wrong user name or password")
	r = b.browser(t).login("nobody", "x")
	require.Equal(t, http.StatusUnauthorized, r.code)
}

func TestSecureCookiesByDefault(t *testing.T) {
	b := setup(t, func(c *config.Serve) { c.InsecureCookie = false })
	r := b.browser(t).get("/login")
	joined := strings.Join(r.hdr.Values("Set-Cookie"), "\n")
	require.Contains(t, joined, "__Host-airlock_csrf=")
	require.Contains(t, joined, "Secure")
}

func TestTamperedSessionIsRefused(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("victor", "victor-pw")
	u, _ := url.Parse(b.srv.URL)
	for _, ck := range br.c.Jar.Cookies(u) {
		if ck.Name == "airlock_session" {
			payload, mac, _ := strings.Cut(ck.Value, ".")
			// Same MAC, payload claiming alice: refused.
			flip := "A"
			if payload[0] == 'A' {
				flip = "B"
			}
			forged := flip + payload[1:] + "." + mac
			br.c.Jar.SetCookies(u, []*http.Cookie{{Name: "airlock_session", Value: forged, Path: "/"}})
		}
	}
	r := br.get("/tasks")
	require.Equal(t, http.StatusSeeOther, r.code)
	require.Contains(t, r.hdr.Get("Location"), "/login")
}

func TestUnauthenticated(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	r := br.get("/tasks/task-1")
	require.Equal(t, http.StatusSeeOther, r.code)
	require.Equal(t, "/login?next=%2Ftasks%2Ftask-1", r.hdr.Get("Location"))
	r = br.post("/tasks/task-1/decision", url.Values{"decision": {"approve"}})
	require.Equal(t, http.StatusUnauthorized, r.code)
	r = br.get("/api/v1/tasks")
	require.Equal(t, http.StatusUnauthorized, r.code)
	require.Zero(t, b.temporal.updateCount())
}

func TestLogout(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	page := br.get("/tasks")
	r := br.post("/logout", url.Values{"csrf_token": {field(t, csrfRe, page.body)}})
	require.Equal(t, http.StatusSeeOther, r.code)
	require.Equal(t, http.StatusSeeOther, br.get("/tasks").code)
}

func TestCSRFRequiredOnEveryPost(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	// Login form without its token.
	br.get("/login")
	r := br.post("/login", url.Values{"username": {"alice"}, "password": {"alice-pw"}})
	require.Equal(t, http.StatusForbidden, r.code)
	br.mustLogin("alice", "alice-pw")

	form := br.decisionForm("task-1", "approve")
	noToken := url.Values{}
	for k, v := range form {
		if k != "csrf_token" {
			noToken[k] = v
		}
	}
	r = br.post("/tasks/task-1/decision", noToken)
	require.Equal(t, http.StatusForbidden, r.code)
	require.Contains(t, r.body, "CSRF")

	wrong := url.Values{}
	for k, v := range form {
		wrong[k] = v
	}
	wrong.Set("csrf_token", "AAAA"+form.Get("csrf_token")[4:])
	require.Equal(t, http.StatusForbidden, br.post("/tasks/task-1/decision", wrong).code)

	// Another browser's valid token does not fit this browser's cookie.
	other := b.browser(t)
	other.mustLogin("bob", "bob-pw")
	theirs := other.decisionForm("task-1", "approve")
	form.Set("csrf_token", theirs.Get("csrf_token"))
	require.Equal(t, http.StatusForbidden, br.post("/tasks/task-1/decision", form).code)
	require.Zero(t, b.temporal.updateCount(), "no decision may reach the workflow")
}

func TestLoginRateLimitPerIPAndUser(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	for i := 0; i < 5; i++ {
		require.Equal(t, http.StatusUnauthorized, br.login("alice", "wrong").code)
	}
	r := br.login("alice", "alice-pw")
	require.Equal(t, http.StatusTooManyRequests, r.code, "the right password is refused while locked out")
	require.NotEmpty(t, r.hdr.Get("Retry-After"))
	require.Contains(t, r.body, "Too many failed logins")
	// Another user from the same address is not locked out.
	require.Equal(t, http.StatusSeeOther, br.login("bob", "bob-pw").code)
}

func TestLimiterWindow(t *testing.T) {
	l := newLoginLimiter(2, 10*time.Minute)
	now := l.now()
	l.now = func() time.Time { return now }
	l.fail("k")
	l.fail("k")
	blocked, _ := l.blocked("k")
	require.True(t, blocked)
	l.now = func() time.Time { return now.Add(11 * time.Minute) }
	blocked, _ = l.blocked("k")
	require.False(t, blocked)
}

func TestTrustedHeaderOnlyFromProxies(t *testing.T) {
	hdr := func(cidr string) option {
		return func(c *config.Serve) { c.TrustedHeader = "X-Auth-User"; c.TrustedProxies = []string{cidr} }
	}
	get := func(b *bundle, user string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, b.srv.URL+"/tasks", nil)
		require.NoError(t, err)
		req.Header.Set("X-Auth-User", user)
		r, err := b.browser(t).c.Do(req)
		require.NoError(t, err)
		r.Body.Close()
		return r
	}
	b := setup(t, hdr("127.0.0.1/32"))
	require.Equal(t, http.StatusOK, get(b, "alice").StatusCode)

	b = setup(t, hdr("10.0.0.0/8"))
	require.Equal(t, http.StatusSeeOther, get(b, "alice").StatusCode, "header from a non-proxy address is ignored")

	b = setup(t) // off by default
	require.Equal(t, http.StatusSeeOther, get(b, "alice").StatusCode)

	_, err := New(Deps{Temporal: newFakeTemporal(), Config: config.Serve{TrustedHeader: "X-User"}, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	require.Error(t, err, "a trusted header without proxies is a config error")
}

func TestBearerTokens(t *testing.T) {
	b := setup(t)
	call := func(method, path, tok, body string) resp {
		req, err := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		req.Header.Set("Content-Type", "application/json")
		return b.browser(t).do(req)
	}
	require.Equal(t, http.StatusUnauthorized, call("GET", "/api/v1/tasks", "nope", "").code)
	r := call("GET", "/api/v1/tasks", viewerTok, "")
	require.Equal(t, http.StatusOK, r.code)
	require.Contains(t, r.body, `"workflow_id":"task-1"`)
	r = call("POST", "/api/v1/tasks/task-1/decision", viewerTok, `{"decision":"approve","plan_hash":"`+planHash+`"}`)
	require.Equal(t, http.StatusForbidden, r.code)
	require.Zero(t, b.temporal.updateCount())

	r = call("POST", "/api/v1/tasks/task-1/decision", approverTok, `{"decision":"approve","plan_hash":"sha256:old"}`)
	require.Equal(t, http.StatusConflict, r.code)
	require.Contains(t, r.body, `"error":"stale_plan"`)
	r = call("POST", "/api/v1/tasks/task-1/decision", approverTok, `{"decision":"approve","plan_hash":"`+planHash+`","by":"mallory"}`)
	require.Equal(t, http.StatusBadRequest, r.code, "the decider comes from the token, not the body")
	r = call("POST", "/api/v1/tasks/task-1/decision", approverTok, `{"decision":"approve","plan_hash":"`+planHash+`"}`)
	require.Equal(t, http.StatusOK, r.code, r.body)
	require.Contains(t, r.body, `"outcome":"approved"`)
	require.Equal(t, "alice", b.temporal.status("task-1").Approval.Votes[0].By)
}

func TestAPIPostRefusesSessionCookie(t *testing.T) {
	b := setup(t)
	br := b.browser(t)
	br.mustLogin("alice", "alice-pw")
	require.Equal(t, http.StatusOK, br.get("/api/v1/tasks/task-1").code, "GET with a session works (live updates)")
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/api/v1/tasks/task-1/decision", strings.NewReader(`{"decision":"approve","plan_hash":"`+planHash+`"}`))
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, br.do(req).code)
	require.Zero(t, b.temporal.updateCount())
}

func TestHealthz(t *testing.T) {
	b := setup(t)
	r := b.browser(t).get("/healthz")
	require.Equal(t, http.StatusOK, r.code, r.body)
	b.events.pingErr = errors.New("connection refused")
	r = b.browser(t).get("/healthz")
	require.Equal(t, http.StatusServiceUnavailable, r.code)
	require.Contains(t, r.body, "connection refused")
	b.events.pingErr = nil
	b.temporal.healthErr = context.DeadlineExceeded
	require.Equal(t, http.StatusServiceUnavailable, b.browser(t).get("/healthz").code)
}

func TestCodecMountedUnderPrefix(t *testing.T) {
	var got string
	codec := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.URL.Path; w.WriteHeader(299) })
	h, err := New(Deps{Temporal: newFakeTemporal(), Codec: codec, Config: config.Serve{InsecureCookie: true}, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/codec/decode", strings.NewReader("{}")))
	require.Equal(t, 299, rec.Code)
	require.Equal(t, "/decode", got)
}
