package testsuite

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/bcrypt"

	approvalsui "github.com/airlock-dev/airlock/approvals-ui"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/workflows"
)

// uiBundle is one dev server, one set of workers and one approvals UI,
// shared by the subtests of TestApprovalsUI. Each subtest has its own
// browser (fresh profile) and its own task.
type uiBundle struct {
	temporal *Temporal
	fakes    *uiFakes
	url      string
	chromium string
}

var uiUsers = map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "victor": "victor-pw"}

func uiSetup(t *testing.T) *uiBundle {
	t.Helper()
	chromium := os.Getenv("AIRLOCK_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	b := &uiBundle{chromium: RequirePath(t, "chromium (apt-get install chromium)", chromium)}
	b.temporal = StartTemporal(t)
	b.fakes = &uiFakes{}
	ws, err := b.fakes.startWorkers(b.temporal.Client)
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, w := range ws {
			w.Stop()
		}
	})
	var users []config.User
	for name, pw := range uiUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		require.NoError(t, err)
		role := approvalsui.RoleApprover
		if name == "victor" {
			role = approvalsui.RoleViewer
		}
		users = append(users, config.User{Name: name, Hash: string(h), Role: role})
	}
	h, err := approvalsui.New(approvalsui.Deps{
		Temporal: b.temporal.Client,
		Events:   b.fakes,
		Config:   config.Serve{Users: users, InsecureCookie: true},
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

// uiInput is a valid runbook task waiting for approvers, started by dave.
func uiInput(goal string, quorum int, approvers ...string) workflows.TaskInput {
	return workflows.TaskInput{
		Goal:   goal,
		Source: workflows.SourceSpec{Image: "bookworm"},
		Agent: workflows.AgentSpec{Mode: "runbook", Steps: []workflows.RunbookStep{
			{Run: "apt-get install -y nginx"},
			{WriteFile: &workflows.WriteFile{Path: "/etc/motd", Content: "welcome\n"}},
		}},
		Target:   workflows.TargetSpec{Env: "prod", Hosts: []string{"prod-web-1"}},
		Approval: workflows.ApprovalPolicy{Approvers: approvers, Quorum: quorum},
		Origin:   workflows.Origin{Via: "ui", By: "dave"},
	}
}

var idCleaner = regexp.MustCompile(`[^a-z0-9-]+`)

// startTask starts the real workflow and waits until it asks for approval.
func (b *uiBundle) startTask(t *testing.T, in workflows.TaskInput) (string, workflows.Status) {
	t.Helper()
	id := "task-ui-" + strings.Trim(idCleaner.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	_, err := b.temporal.Client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: id, TaskQueue: workflows.TaskQueue,
	}, workflows.WorkflowType, in)
	require.NoError(t, err)
	st := b.waitStatus(t, id, "awaiting approval", func(st workflows.Status) bool {
		return st.Phase == workflows.PhaseAwaiting && st.Approval != nil && st.Approval.Open
	})
	return id, st
}

func (b *uiBundle) status(t *testing.T, id string) (workflows.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := b.temporal.Client.QueryWorkflow(ctx, id, "", workflows.QueryStatus)
	if err != nil {
		return workflows.Status{}, err
	}
	var st workflows.Status
	err = v.Get(&st)
	return st, err
}

// waitStatus polls the status query until cond holds.
func (b *uiBundle) waitStatus(t *testing.T, id, what string, cond func(workflows.Status) bool) workflows.Status {
	t.Helper()
	var st workflows.Status
	var err error
	Eventually(t, 60*time.Second, func() bool {
		st, err = b.status(t, id)
		return err == nil && cond(st)
	}, func() string { return fmt.Sprintf("%s: %s; phase %q; err %v", id, what, st.Phase, err) })
	return st
}

// result waits for the workflow to end and returns its result.
func (b *uiBundle) result(t *testing.T, id string) workflows.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var res workflows.Result
	require.NoError(t, b.temporal.Client.GetWorkflow(ctx, id, "").Get(ctx, &res))
	return res
}

// uiBrowser is one headless chromium with a fresh profile.
type uiBrowser struct {
	t      *testing.T
	ctx    context.Context // the first tab; actions run with a timeout derived from it
	base   string
	alerts chan string
}

func (b *uiBundle) browser(t *testing.T) *uiBrowser {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(b.chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1024),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	br := &uiBrowser{t: t, ctx: ctx, base: b.url, alerts: make(chan string, 16)}
	// The first Run starts the browser: no timeout on it (see chromedp.Run).
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")), "start chromium")
	br.watchDialogs(ctx)
	t.Cleanup(br.screenshotOnFailure)
	return br
}

// tab opens another tab of the same browser (same cookies), as a second
// browser tab of the same person.
func (br *uiBrowser) tab() *uiBrowser {
	br.t.Helper()
	ctx, cancel := chromedp.NewContext(br.ctx)
	br.t.Cleanup(cancel)
	tb := &uiBrowser{t: br.t, ctx: ctx, base: br.base, alerts: br.alerts}
	require.NoError(br.t, chromedp.Do(ctx, chromedp.Navigate("about:blank")), "open tab")
	tb.watchDialogs(ctx)
	return tb
}

// watchDialogs records and dismisses every alert: an alert means injected
// script ran.
func (br *uiBrowser) watchDialogs(ctx context.Context) {
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			select {
			case br.alerts <- ev.Message:
			default:
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
}

// screenshotOnFailure saves a PNG and the HTML of the page to
// testsuite/artifacts/ when the test failed (always with
// AIRLOCK_UI_SCREENSHOTS=1).
func (br *uiBrowser) screenshotOnFailure() {
	if !br.t.Failed() && os.Getenv("AIRLOCK_UI_SCREENSHOTS") != "1" {
		return
	}
	dir := filepath.Join(RepoRoot(), "testsuite", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		br.t.Logf("artifacts dir: %v", err)
		return
	}
	name := idCleaner.ReplaceAllString(strings.ToLower(br.t.Name()), "_")
	ctx, cancel := context.WithTimeout(br.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		p := filepath.Join(dir, name+".png")
		if os.WriteFile(p, png, 0o644) == nil {
			br.t.Logf("screenshot: %s", p)
		}
	} else {
		br.t.Logf("screenshot failed: %v", err)
	}
	if html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html"))); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name+".html"), []byte(html), 0o644)
	}
}

// do runs steps with a bounded time.
func (br *uiBrowser) do(steps ...chromedp.Action[chromedp.Void]) {
	br.t.Helper()
	ctx, cancel := context.WithTimeout(br.ctx, 30*time.Second)
	defer cancel()
	require.NoError(br.t, chromedp.Do(ctx, steps...))
}

func uiRun[T any](br *uiBrowser, a chromedp.Action[T]) T {
	br.t.Helper()
	ctx, cancel := context.WithTimeout(br.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	require.NoError(br.t, err)
	return v
}

func (br *uiBrowser) text(sel string) string {
	br.t.Helper()
	return uiRun(br, chromedp.Text(chromedp.CSS(sel)))
}

func (br *uiBrowser) count(sel string) int {
	br.t.Helper()
	return uiRun(br, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
}

// waitText waits until the element's text contains want. It polls with
// backoff and evaluates on whatever document is current, so a navigation
// in between (a form post and its redirect) does not break the wait.
func (br *uiBrowser) waitText(sel, want string) {
	br.t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.textContent : "(none)"; })()`, sel)
	var got string
	var err error
	Eventually(br.t, 45*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(br.ctx, 5*time.Second)
		defer cancel()
		got, err = chromedp.Run(ctx, chromedp.Evaluate[string](js))
		return err == nil && strings.Contains(got, want)
	}, func() string { return fmt.Sprintf("%s never contained %q (now %q, err %v)", sel, want, got, err) })
}

func (br *uiBrowser) login(user string) {
	br.t.Helper()
	br.do(
		chromedp.Navigate(br.base+"/login"),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), user),
		chromedp.SendKeys(chromedp.ID("password"), uiUsers[user]),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.CSS("h1")),
	)
	br.waitText("header .who", user)
}

// openTask finds the task in the list, as a person would, and opens it.
func (br *uiBrowser) openTask(id string) {
	br.t.Helper()
	row := fmt.Sprintf(`tr[data-id=%q]`, id)
	br.do(
		chromedp.Navigate(br.base+"/tasks"),
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.Click(chromedp.CSS(row+" a")),
		chromedp.WaitVisible(chromedp.ID("goal")),
	)
	br.waitText("main .crumbs", id)
}

// enableForms undoes the live script's disabling of the decision buttons,
// as a browser without JavaScript (or a slow one) would still submit.
func (br *uiBrowser) enableForms() {
	br.do(chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('form.decision button').forEach(b => b.disabled = false)`))
}

func (br *uiBrowser) noAlerts() {
	br.t.Helper()
	select {
	case m := <-br.alerts:
		br.t.Fatalf("injected script ran: alert %q", m)
	default:
	}
	xss, err := chromedp.Run(br.ctx, chromedp.Evaluate[string](`typeof window.__xss`))
	require.NoError(br.t, err)
	require.Equal(br.t, "undefined", xss, "injected script ran")
}
