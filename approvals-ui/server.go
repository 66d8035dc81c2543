// Package approvalsui is the human gate: server-rendered pages and a JSON
// API to review a waiting AgentTask (diff, playbook, verification, votes,
// audit) and send the `decide` update with the plan_hash the page showed.
//
// Pages work without JavaScript; the one embedded script only adds live
// updates over SSE. Authentication: users from config (bcrypt/argon2id),
// signed session cookies, CSRF tokens on every form, optional trusted
// header from configured proxies, and bearer tokens for the API.
package approvalsui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.temporal.io/sdk/client"

	"github.com/airlock-dev/airlock/config"
)

//go:embed templates/*.html static/* openapi.yaml
var assets embed.FS

// Event is one audit record as the pages show it.
type Event struct {
	ID         int64          `json:"id"`
	WorkflowID string         `json:"workflow_id"`
	Kind       string         `json:"kind"`
	Actor      string         `json:"actor,omitempty"`
	At         time.Time      `json:"at"`
	Data       map[string]any `json:"data,omitempty"`
	ArtifactID string         `json:"artifact_id,omitempty"`
}

// Events is what the UI needs from the audit store. ListEvents returns a
// task's events oldest first; Ping is for /healthz.
type Events interface {
	ListEvents(ctx context.Context, workflowID string) ([]Event, error)
	Ping(ctx context.Context) error
}

// TaskSummary is the store's mirror of a task, used to show goals of
// closed tasks in the list without querying each workflow.
type TaskSummary struct {
	Goal      string
	StartedBy string
	PlanHash  string
}

// TaskSummaries is optional: when Deps.Events also implements it, the task
// list shows goals of closed tasks too.
type TaskSummaries interface {
	TaskSummaries(ctx context.Context, workflowIDs []string) (map[string]TaskSummary, error)
}

// Deps are the server's collaborators.
type Deps struct {
	Temporal client.Client
	Events   Events // may be nil: no audit log, /healthz reports the store as not configured
	Config   config.Serve
	Codec    http.Handler // mounted at /codec/ when non-nil
	Logger   *slog.Logger
}

// DefaultMaxBodyBytes caps forms and API bodies when the config does not.
const DefaultMaxBodyBytes = 1 << 20

// MaxPlaybookBytes caps an edited playbook (it goes into workflow history).
const MaxPlaybookBytes = 256 << 10

type server struct {
	temporal client.Client
	events   Events
	cfg      config.Serve
	log      *slog.Logger
	auth     *auth
	metrics  *metrics
	pages    map[string]*template.Template
	maxBody  int64
	poll     time.Duration
}

// New builds the HTTP handler for `airlock serve`.
func New(d Deps) (http.Handler, error) {
	if d.Temporal == nil {
		return nil, errors.New("approvals-ui: Deps.Temporal is required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	a, err := newAuth(d.Config)
	if err != nil {
		return nil, fmt.Errorf("approvals-ui auth: %w", err)
	}
	if d.Config.SessionKey == "" {
		d.Logger.Warn("serve.session_key is not set: using a random key, sessions end when the server restarts")
	}
	pages, err := parsePages()
	if err != nil {
		return nil, fmt.Errorf("approvals-ui templates: %w", err)
	}
	s := &server{temporal: d.Temporal, events: d.Events, cfg: d.Config, log: d.Logger, auth: a,
		pages: pages, maxBody: d.Config.MaxBodyBytes, poll: 2 * time.Second}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	s.metrics = newMetrics(s.countByPhase)

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	// Only configured proxies may set X-Forwarded-For (rate limiting keys
	// on the client IP). gin trusts every proxy unless told otherwise.
	if err := r.SetTrustedProxies(d.Config.TrustedProxies); err != nil {
		return nil, fmt.Errorf("approvals-ui trusted proxies: %w", err)
	}
	r.Use(s.recoverer, s.observe, s.securityHeaders, s.limitBody)

	r.GET("/healthz", s.healthz)
	r.GET("/metrics", gin.WrapH(s.metrics.handler()))
	static, _ := fs.Sub(assets, "static")
	r.GET("/static/*filepath", s.cacheStatic, gin.WrapH(http.StripPrefix("/static/", http.FileServer(http.FS(static)))))
	r.GET("/api/v1/openapi.yaml", s.openapi)
	if d.Codec != nil {
		codec := http.StripPrefix("/codec", d.Codec)
		r.Any("/codec/*path", gin.WrapH(codec))
	}

	html := r.Group("/", s.withCSRFCookie)
	html.GET("/", func(c *gin.Context) { c.Redirect(http.StatusSeeOther, "/tasks") })
	html.GET("/login", s.loginPage)
	html.POST("/login", s.requireCSRF, s.loginPost)
	html.POST("/logout", s.requireCSRF, s.logout)
	pg := html.Group("/tasks", s.requirePageUser)
	pg.GET("", s.listPage)
	pg.GET("/:id", s.taskPage)
	pg.GET("/:id/modify", s.modifyPage)
	pg.GET("/:id/files/:n", s.filePage)
	pg.GET("/:id/diff", s.diffPage)
	pg.GET("/:id/steps", s.stepsPage)
	pg.GET("/:id/steps/:n", s.stepPage)
	pg.GET("/:id/playbook", s.playbookText)
	pg.GET("/:id/audit", s.auditPage)
	pg.POST("/:id/decision", s.requireCSRF, s.decisionPost)
	pg.POST("/:id/answer", s.requireCSRF, s.answerPost)

	api := r.Group("/api/v1", s.requireAPIUser)
	api.GET("/tasks", s.apiList)
	api.GET("/tasks/:id", s.apiTask)
	api.POST("/tasks/:id/decision", s.apiDecision)
	api.POST("/tasks/:id/answer", s.apiAnswer)
	api.GET("/tasks/:id/events", s.apiEvents)

	r.NoRoute(func(c *gin.Context) { s.notFound(c) })
	r.NoMethod(func(c *gin.Context) { s.fail(c, http.StatusMethodNotAllowed, "method not allowed") })
	return r, nil
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("layout: %w", err)
	}
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("glob templates: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(assets, n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		pages[name] = t
	}
	return pages, nil
}

const ctxIdentity = "airlock.identity"

func who(c *gin.Context) *identity {
	if v, ok := c.Get(ctxIdentity); ok {
		if id, ok := v.(*identity); ok {
			return id
		}
	}
	return nil
}

func (s *server) recoverer(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in handler", "path", c.Request.URL.Path, "panic", fmt.Sprint(v))
			c.AbortWithStatus(http.StatusInternalServerError)
		}
	}()
	c.Next()
}

// observe logs every request as JSON and feeds the duration histogram.
func (s *server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	d := time.Since(start)
	s.metrics.httpDuration.WithLabelValues(c.Request.Method, route, fmt.Sprint(c.Writer.Status())).Observe(d.Seconds())
	attrs := []any{"method", c.Request.Method, "route", route, "path", c.Request.URL.Path,
		"status", c.Writer.Status(), "duration_ms", d.Milliseconds(), "client_ip", c.ClientIP()}
	if id := who(c); id != nil {
		attrs = append(attrs, "user", id.Name, "auth", id.Via)
	}
	if len(c.Errors) > 0 {
		attrs = append(attrs, "error", c.Errors.String())
	}
	s.log.Info("http request", attrs...)
}

func (s *server) securityHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	if !strings.HasPrefix(c.Request.URL.Path, "/static/") {
		h.Set("Cache-Control", "no-store")
	}
	c.Next()
}

func (s *server) cacheStatic(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=3600")
	c.Next()
}

// limitBody refuses bodies over the limit with 413: at once when the
// length is declared, while reading otherwise (see readForm).
func (s *server) limitBody(c *gin.Context) {
	if c.Request.ContentLength > s.maxBody {
		s.fail(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", s.maxBody))
		c.Abort()
		return
	}
	if c.Request.Body != nil {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.maxBody)
	}
	c.Next()
}

// tooLarge reports whether err comes from the body limit.
func tooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

func (s *server) healthz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer cancel()
	out := gin.H{"temporal": "ok", "store": "ok"}
	code := http.StatusOK
	if _, err := s.temporal.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		out["temporal"] = "error: " + err.Error()
		code = http.StatusServiceUnavailable
	}
	switch {
	case s.events == nil:
		out["store"] = "not configured"
	default:
		if err := s.events.Ping(ctx); err != nil {
			out["store"] = "error: " + err.Error()
			code = http.StatusServiceUnavailable
		}
	}
	if code == http.StatusOK {
		out["status"] = "ok"
	} else {
		out["status"] = "unhealthy"
	}
	c.JSON(code, out)
}

func (s *server) openapi(c *gin.Context) {
	b, err := assets.ReadFile("openapi.yaml")
	if err != nil {
		s.fail(c, http.StatusInternalServerError, "openapi.yaml missing")
		return
	}
	c.Data(http.StatusOK, "application/yaml; charset=utf-8", b)
}

func isAPI(c *gin.Context) bool { return strings.HasPrefix(c.Request.URL.Path, "/api/") }

// fail answers with an error in the caller's language: JSON for the API,
// a page for browsers.
func (s *server) fail(c *gin.Context, code int, msg string) {
	if isAPI(c) || strings.HasPrefix(c.Request.URL.Path, "/healthz") {
		c.JSON(code, gin.H{"error": errorCode(code), "message": msg})
		return
	}
	s.render(c, code, "error", &errorPage{pageBase: s.base(c, http.StatusText(code)), Code: code, Message: msg})
}

func (s *server) notFound(c *gin.Context) { s.fail(c, http.StatusNotFound, "No such page or task.") }

func errorCode(code int) string {
	switch code {
	case http.StatusNotFound:
		return "not_found"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnprocessableEntity:
		return "invalid"
	}
	return strings.ReplaceAll(strings.ToLower(http.StatusText(code)), " ", "_")
}
