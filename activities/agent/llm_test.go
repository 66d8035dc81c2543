package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/testsuite"
)

// newLLM returns the activity pointed at url, with a fake key variable and
// a sleep that records the delays it was asked for instead of waiting.
func newLLM(url string) (*LLM, *[]time.Duration) {
	var slept []time.Duration
	return &LLM{
		Config: config.LLM{BaseURL: url, Model: "fake-model", APIKeyEnv: "AIRLOCK_TEST_LLM_KEY"},
		Getenv: func(k string) string {
			if k == "AIRLOCK_TEST_LLM_KEY" {
				return "sk-test-secret"
			}
			return ""
		},
		Sleep: func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return ctx.Err() },
	}, &slept
}

func stepInput() tools.StepInput {
	return tools.StepInput{Step: 1, Messages: []tools.Message{{Role: tools.RoleSystem, Content: "be careful"}, {Role: tools.RoleUser, Content: "goal"}}, Tools: tools.Offered(false)}
}

func TestLLMStepToolCallsAndUsage(t *testing.T) {
	f := testsuite.StartFakeLLM(t, testsuite.FakeReply{
		Content:      "looking",
		ToolCalls:    []testsuite.FakeToolCall{{ID: "c1", Name: "run_command", Arguments: `{"command":"uname -a"}`}, {Name: "read_file", Arguments: `{"path":"/etc/os-release"}`}},
		PromptTokens: 120, OutTokens: 30,
	})
	l, _ := newLLM(f.URL)
	in := stepInput()
	in.Messages = append(in.Messages,
		tools.Message{Role: tools.RoleAssistant, ToolCalls: []tools.ToolCall{{ID: "c0", Name: "list_sandboxes", Arguments: "{}"}}},
		tools.Message{Role: tools.RoleTool, ToolCallID: "c0", Name: "list_sandboxes", Content: "sbx-1"})
	res, err := l.LLMStep(context.Background(), in)
	require.NoError(t, err)
	require.Equal(t, "looking", res.Message.Content)
	require.Len(t, res.Message.ToolCalls, 2)
	require.Equal(t, tools.ToolCall{ID: "c1", Name: "run_command", Arguments: `{"command":"uname -a"}`}, res.Message.ToolCalls[0])
	require.NotEmpty(t, res.Message.ToolCalls[1].ID, "a missing call id is filled in")
	require.Equal(t, tools.Usage{PromptTokens: 120, CompletionTokens: 30, TotalTokens: 150}, res.Usage)
	require.Equal(t, "tool_calls", res.FinishReason)
	require.Equal(t, 1, res.Attempts)

	reqs := f.Requests()
	require.Len(t, reqs, 1)
	require.Equal(t, "Bearer sk-test-secret", reqs[0].Authorization, "the key comes from the configured variable")
	require.Equal(t, "fake-model", reqs[0].Model)
	require.Len(t, reqs[0].Tools, len(tools.All()))
	require.Equal(t, "c0", reqs[0].Messages[3].ToolCallID)
	require.Equal(t, "list_sandboxes", reqs[0].Messages[2].ToolCalls[0].Function.Name)
	require.Empty(t, f.Errors())
}

func TestLLMStepRetriesRespectRetryAfter(t *testing.T) {
	f := testsuite.StartFakeLLM(t,
		testsuite.FakeReply{Status: http.StatusTooManyRequests, RetryAfter: "7"},
		testsuite.FakeReply{Status: http.StatusInternalServerError},
		testsuite.FakeReply{Status: http.StatusBadGateway, Body: "<html>bad gateway</html>"},
		testsuite.Call("finish", `{"summary":"done"}`),
	)
	l, slept := newLLM(f.URL)
	res, err := l.LLMStep(context.Background(), stepInput())
	require.NoError(t, err)
	require.Equal(t, 4, res.Attempts)
	require.Equal(t, "finish", res.Message.ToolCalls[0].Name)
	// Retry-After wins over the backoff; then 2s and 4s of backoff.
	require.Equal(t, []time.Duration{7 * time.Second, 2 * time.Second, 4 * time.Second}, *slept)
}

func TestLLMStepRealRetryAfterWait(t *testing.T) {
	// With the real sleep: a 429 with Retry-After: 1 is waited out and the
	// step succeeds (no assertion on how long it took).
	f := testsuite.StartFakeLLM(t, testsuite.FakeReply{Status: http.StatusTooManyRequests, RetryAfter: "1"}, testsuite.Call("finish", `{"summary":"ok"}`))
	l, _ := newLLM(f.URL)
	l.Sleep = nil
	res, err := l.LLMStep(context.Background(), stepInput())
	require.NoError(t, err)
	require.Equal(t, 2, res.Attempts)
}

func TestLLMStepFailsClearly(t *testing.T) {
	t.Run("persistent 500", func(t *testing.T) {
		var script []testsuite.FakeReply
		for i := 0; i < DefaultMaxAttempts; i++ {
			script = append(script, testsuite.FakeReply{Status: 503})
		}
		f := testsuite.StartFakeLLM(t, script...)
		l, slept := newLLM(f.URL)
		_, err := l.LLMStep(context.Background(), stepInput())
		requireAppError(t, err, tools.ErrTypeLLMUnavailable, "failed 5 times", "HTTP 503")
		require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}, *slept)
	})
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		ln.Close()
		l, slept := newLLM("http://" + addr + "/v1")
		_, err = l.LLMStep(context.Background(), stepInput())
		requireAppError(t, err, tools.ErrTypeLLMUnavailable, "failed 5 times", "refused")
		require.Len(t, *slept, 4)
	})
	t.Run("slow endpoint", func(t *testing.T) {
		f := testsuite.StartFakeLLM(t, testsuite.FakeReply{Delay: time.Minute}, testsuite.FakeReply{Delay: time.Minute})
		l, _ := newLLM(f.URL)
		l.Config.RequestTimeout = 50 * time.Millisecond
		l.Config.MaxAttempts = 2
		_, err := l.LLMStep(context.Background(), stepInput())
		requireAppError(t, err, tools.ErrTypeLLMUnavailable, "failed 2 times", "Timeout")
	})
	t.Run("Retry-After too long", func(t *testing.T) {
		f := testsuite.StartFakeLLM(t, testsuite.FakeReply{Status: 429, RetryAfter: "3600"})
		l, _ := newLLM(f.URL)
		_, err := l.LLMStep(context.Background(), stepInput())
		requireAppError(t, err, tools.ErrTypeLLMUnavailable, "retry after 1h0m0s")
	})
	t.Run("bad key is not retried", func(t *testing.T) {
		f := testsuite.StartFakeLLM(t, testsuite.FakeReply{Status: 401, Body: `{"error":{"message":"invalid api key","type":"auth"}}`})
		l, slept := newLLM(f.URL)
		_, err := l.LLMStep(context.Background(), stepInput())
		requireAppError(t, err, tools.ErrTypeLLMRefused, "invalid api key")
		require.Empty(t, *slept)
	})
	t.Run("no configuration", func(t *testing.T) {
		l := &LLM{}
		_, err := l.LLMStep(context.Background(), stepInput())
		requireAppError(t, err, tools.ErrTypeLLMConfig, "llm.base_url")
		l = &LLM{Config: config.LLM{BaseURL: "http://127.0.0.1:1/v1", Model: "m", APIKeyEnv: "AIRLOCK_NO_SUCH_VAR"}, Getenv: func(string) string { return "" }}
		_, err = l.LLMStep(context.Background(), stepInput())
		requireAppError(t, err, tools.ErrTypeLLMConfig, "AIRLOCK_NO_SUCH_VAR")
	})
}

func TestLLMStepMalformedReplyIsAResult(t *testing.T) {
	f := testsuite.StartFakeLLM(t, testsuite.FakeReply{Body: "this is not JSON"}, testsuite.FakeReply{Body: `{"id":"x","choices":[]}`})
	l, _ := newLLM(f.URL)
	res, err := l.LLMStep(context.Background(), stepInput())
	require.NoError(t, err)
	require.Contains(t, res.Malformed, "not a chat completion")
	res, err = l.LLMStep(context.Background(), stepInput())
	require.NoError(t, err)
	require.Contains(t, res.Malformed, "no choices")
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	require.Equal(t, 3*time.Second, parseRetryAfter("3", now))
	require.Equal(t, 1500*time.Millisecond, parseRetryAfter("1.5", now))
	require.Equal(t, 30*time.Second, parseRetryAfter(now.Add(30*time.Second).Format(http.TimeFormat), now))
	require.Zero(t, parseRetryAfter("soon", now))
	require.Zero(t, parseRetryAfter("", now))
}

func requireAppError(t *testing.T, err error, typ string, contains ...string) {
	t.Helper()
	require.Error(t, err)
	var ae *temporal.ApplicationError
	require.True(t, errors.As(err, &ae), "want an application error, got %T %v", err, err)
	require.Equal(t, typ, ae.Type(), err.Error())
	require.True(t, ae.NonRetryable(), "must not be retried by Temporal")
	for _, c := range contains {
		require.True(t, strings.Contains(err.Error(), c), "%q does not contain %q", err.Error(), c)
	}
}
