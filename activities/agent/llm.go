package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/activities/heartbeat"
	"github.com/airlock-dev/airlock/config"
)

// Defaults of the LLM step.
const (
	DefaultRequestTimeout = 2 * time.Minute
	DefaultMaxAttempts    = 5
	// MaxRetryAfter is the longest Retry-After the step waits for; a longer
	// one fails the step at once, saying so.
	MaxRetryAfter = 2 * time.Minute
)

// LLM is the control queue's LLM step activity: one chat completion with
// tools against an OpenAI-compatible endpoint (OpenAI, Azure, Ollama, vLLM,
// OpenRouter). The API key is read from the environment variable named in
// the configuration at call time; it never enters activity inputs or
// results, so it never reaches workflow history.
type LLM struct {
	Config config.LLM
	// Getenv reads the key's variable; nil means os.Getenv.
	Getenv func(string) string
	// Sleep waits between attempts; nil means a timer that honours ctx.
	Sleep func(ctx context.Context, d time.Duration) error
}

// LLMStep is the activity. Retries on 429, 5xx, timeouts and refused
// connections happen inside, with exponential backoff that respects
// Retry-After; after the last attempt the error is non-retryable and says
// what the endpoint did.
func (l *LLM) LLMStep(ctx context.Context, in tools.StepInput) (tools.StepResult, error) {
	stop := heartbeat.Every(ctx, 10*time.Second, fmt.Sprintf("llm step %d", in.Step))
	defer stop()
	res, err := l.complete(ctx, in)
	if err == nil {
		return res, nil
	}
	var le *llmError
	if errors.As(err, &le) {
		return res, temporal.NewNonRetryableApplicationError(le.Error(), le.kind, nil)
	}
	return res, err
}

type llmError struct {
	kind string
	msg  string
}

func (e *llmError) Error() string { return e.msg }

// complete is the plain-Go step, testable without Temporal.
func (l *LLM) complete(ctx context.Context, in tools.StepInput) (tools.StepResult, error) {
	cfg := l.Config
	model := in.Model
	if model == "" {
		model = cfg.Model
	}
	switch {
	case cfg.BaseURL == "":
		return tools.StepResult{}, &llmError{tools.ErrTypeLLMConfig, "no LLM endpoint configured: set llm.base_url (or AIRLOCK_LLM_BASE_URL) on the control worker, or use agent.mode runbook"}
	case model == "":
		return tools.StepResult{}, &llmError{tools.ErrTypeLLMConfig, "no model: set llm.model on the control worker or agent.model in the task"}
	}
	key := ""
	if cfg.APIKeyEnv != "" {
		getenv := l.Getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		if key = getenv(cfg.APIKeyEnv); key == "" {
			return tools.StepResult{}, &llmError{tools.ErrTypeLLMConfig, fmt.Sprintf("the API key variable %s named by llm.api_key_env is empty on the control worker", cfg.APIKeyEnv)}
		}
	}
	timeout := cfg.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	doer := &recordingDoer{c: &http.Client{Timeout: timeout}}
	var occ openai.ClientConfig
	if strings.EqualFold(cfg.APIType, "azure") {
		occ = openai.DefaultAzureConfig(key, cfg.BaseURL)
		if cfg.APIVersion != "" {
			occ.APIVersion = cfg.APIVersion
		}
	} else {
		occ = openai.DefaultConfig(key)
		occ.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	}
	occ.HTTPClient = doer
	client := openai.NewClientWithConfig(occ)
	req := openai.ChatCompletionRequest{Model: model, Messages: toOpenAI(in.Messages), MaxCompletionTokens: in.MaxCompletionTokens}
	for _, t := range in.Tools {
		req.Tools = append(req.Tools, openai.Tool{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{Name: t.Name, Description: t.Description, Parameters: t.Parameters}})
	}

	attempts := cfg.MaxAttempts
	if attempts <= 0 {
		attempts = DefaultMaxAttempts
	}
	var last string
	for attempt := 1; ; attempt++ {
		resp, err := client.CreateChatCompletion(ctx, req)
		status, retryAfter := doer.last()
		if err == nil {
			return fromOpenAI(resp, attempt), nil
		}
		if ctx.Err() != nil {
			return tools.StepResult{}, fmt.Errorf("llm step: %w", ctx.Err())
		}
		if status == http.StatusOK {
			// The endpoint answered but the body is not a completion.
			return tools.StepResult{Malformed: "the endpoint's reply was not a chat completion: " + clip(err.Error(), 300), Attempts: attempt}, nil
		}
		retry, desc := classify(err, status)
		if !retry {
			return tools.StepResult{}, &llmError{tools.ErrTypeLLMRefused, fmt.Sprintf("LLM endpoint %s refused the request (model %s): %s", cfg.BaseURL, model, desc)}
		}
		last = desc
		if attempt >= attempts {
			return tools.StepResult{}, &llmError{tools.ErrTypeLLMUnavailable, fmt.Sprintf("LLM endpoint %s failed %d times; last: %s", cfg.BaseURL, attempt, last)}
		}
		delay := backoff(attempt)
		if retryAfter > 0 {
			if retryAfter > MaxRetryAfter {
				return tools.StepResult{}, &llmError{tools.ErrTypeLLMUnavailable, fmt.Sprintf("LLM endpoint %s asks to retry after %s (more than %s); last: %s", cfg.BaseURL, retryAfter, MaxRetryAfter, last)}
			}
			delay = retryAfter
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, fmt.Sprintf("attempt %d: %s; retrying in %s", attempt, desc, delay))
		}
		if err := l.sleep(ctx, delay); err != nil {
			return tools.StepResult{}, fmt.Errorf("llm step: %w", err)
		}
	}
}

func (l *LLM) sleep(ctx context.Context, d time.Duration) error {
	if l.Sleep != nil {
		return l.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// backoff is 1s, 2s, 4s, … capped at 30s.
func backoff(attempt int) time.Duration {
	d := time.Second << (attempt - 1)
	if d > 30*time.Second || d <= 0 {
		d = 30 * time.Second
	}
	return d
}

// classify says whether an error is worth another attempt, and describes it.
func classify(err error, status int) (bool, string) {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	code := status
	msg := err.Error()
	switch {
	case errors.As(err, &apiErr):
		code, msg = apiErr.HTTPStatusCode, fmt.Sprintf("HTTP %d: %s", apiErr.HTTPStatusCode, apiErr.Message)
	case errors.As(err, &reqErr):
		code, msg = reqErr.HTTPStatusCode, fmt.Sprintf("HTTP %d: %s", reqErr.HTTPStatusCode, clip(strings.TrimSpace(string(reqErr.Body)), 200))
	}
	switch {
	case code == 0: // no HTTP response: refused, reset, timeout
		return true, clip(msg, 300)
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		return true, msg
	}
	return false, msg
}

// recordingDoer remembers the status and Retry-After of the last response,
// which go-openai does not expose on errors.
type recordingDoer struct {
	c          *http.Client
	mu         sync.Mutex
	status     int
	retryAfter time.Duration
}

func (d *recordingDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.c.Do(req)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status, d.retryAfter = 0, 0
	if err == nil {
		d.status = resp.StatusCode
		d.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return resp, err
}

func (d *recordingDoer) last() (int, time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status, d.retryAfter
}

// parseRetryAfter reads delta-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

func toOpenAI(msgs []tools.Message) []openai.ChatCompletionMessage {
	out := make([]openai.ChatCompletionMessage, 0, len(msgs))
	for _, m := range msgs {
		om := openai.ChatCompletionMessage{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID, Name: m.Name}
		for _, c := range m.ToolCalls {
			om.ToolCalls = append(om.ToolCalls, openai.ToolCall{ID: c.ID, Type: openai.ToolTypeFunction, Function: openai.FunctionCall{Name: c.Name, Arguments: c.Arguments}})
		}
		out = append(out, om)
	}
	return out
}

func fromOpenAI(resp openai.ChatCompletionResponse, attempts int) tools.StepResult {
	res := tools.StepResult{Model: resp.Model, Attempts: attempts,
		Usage: tools.Usage{PromptTokens: resp.Usage.PromptTokens, CompletionTokens: resp.Usage.CompletionTokens, TotalTokens: resp.Usage.TotalTokens}}
	if res.Usage.TotalTokens == 0 {
		res.Usage.TotalTokens = res.Usage.PromptTokens + res.Usage.CompletionTokens
	}
	if len(resp.Choices) == 0 {
		res.Malformed = "the endpoint's reply has no choices"
		return res
	}
	c := resp.Choices[0]
	res.FinishReason = string(c.FinishReason)
	res.Message = tools.Message{Role: tools.RoleAssistant, Content: c.Message.Content}
	for i, tc := range c.Message.ToolCalls {
		id := tc.ID
		if id == "" {
			id = "call_" + strconv.Itoa(i+1) // some local servers omit IDs
		}
		res.Message.ToolCalls = append(res.Message.ToolCalls, tools.ToolCall{ID: id, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
	}
	if c.Message.FunctionCall != nil && len(res.Message.ToolCalls) == 0 { // legacy function_call
		res.Message.ToolCalls = []tools.ToolCall{{ID: "call_1", Name: c.Message.FunctionCall.Name, Arguments: c.Message.FunctionCall.Arguments}}
	}
	return res
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
