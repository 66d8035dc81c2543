// Package testsuite holds Airlock's end-to-end and browser tests. This
// file has the shared helpers: prerequisites and a real Temporal dev server.
package testsuite

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	sdktestsuite "go.temporal.io/sdk/testsuite"
)

// RepoRoot is the repository's top directory, found from this file.
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Dir(filepath.Dir(file))
}

// RequirePath returns path if it exists. Otherwise the test stops: with
// CI=true a missing prerequisite is a failure, elsewhere a skip, and either
// way the message names what is missing.
func RequirePath(t testing.TB, what, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, fmt.Sprintf("%s not found at %s (%v)", what, path, err))
	}
	return path
}

// Missing stops the test for a missing prerequisite (see RequirePath).
func Missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing prerequisite: %s", msg)
	}
	t.Skipf("missing prerequisite (CI=true makes this a failure): %s", msg)
}

// TemporalBinary is ./bin/temporal, or $AIRLOCK_TEMPORAL_BIN. Tests never
// download a server.
func TemporalBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("AIRLOCK_TEMPORAL_BIN")
	if p == "" {
		p = filepath.Join(RepoRoot(), "bin", "temporal")
	}
	return RequirePath(t, "temporal CLI (make temporal)", p)
}

// SearchAttributeArgs register Airlock's search attributes (DESIGN.md §3).
var SearchAttributeArgs = []string{
	"--search-attribute", "AirlockPhase=Keyword",
	"--search-attribute", "AirlockSource=Keyword",
	"--search-attribute", "AirlockTarget=Keyword",
	"--search-attribute", "AirlockApprover=KeywordList",
}

// Temporal is a dev server started for one test (or one parent test).
type Temporal struct {
	Client    client.Client
	HostPort  string
	Namespace string
	server    *sdktestsuite.DevServer
	logs      *devLogBuffer
}

// StartTemporal starts `temporal server start-dev` (in-memory SQLite, no
// UI) from ./bin/temporal with the search attributes registered, and stops
// it when the test ends. On failure the server's log is printed.
func StartTemporal(t testing.TB) *Temporal {
	t.Helper()
	bin := TemporalBinary(t)
	logs := &devLogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := sdktestsuite.StartDevServer(ctx, sdktestsuite.DevServerOptions{
		ExistingPath:  bin,
		ClientOptions: &client.Options{Namespace: "default", Logger: sdklog.NewStructuredLogger(logger)},
		LogLevel:      "warn",
		ExtraArgs:     SearchAttributeArgs,
		Stdout:        logs,
		Stderr:        logs,
	})
	if err != nil {
		t.Fatalf("start temporal dev server: %v\n%s", err, logs.String())
	}
	tp := &Temporal{Client: srv.Client(), HostPort: srv.FrontendHostPort(), Namespace: "default", server: srv, logs: logs}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("temporal dev server log:\n%s", logTail(logs.String(), 8000))
		}
		tp.Client.Close()
		if err := srv.Stop(); err != nil {
			t.Logf("stop temporal dev server: %v", err)
		}
	})
	return tp
}

// Eventually polls cond with backoff (10 ms doubling to 500 ms) until it
// returns true or timeout passes; then the test fails with describe().
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 10 * time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", timeout, describe())
		}
		time.Sleep(wait)
		wait = min(wait*2, 500*time.Millisecond)
	}
}

type devLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *devLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *devLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func logTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
