package testsuite

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FakeLLM is a scripted OpenAI-compatible server: a real HTTP server that
// speaks POST /v1/chat/completions with tool calls, so the real go-openai
// client talks to it. Each request consumes the next reply of the script;
// a request beyond the script gets a 500 and is recorded as an error.
type FakeLLM struct {
	URL string // base URL, ending in /v1

	srv      *httptest.Server
	mu       sync.Mutex
	script   []FakeReply
	next     int
	requests []FakeRequest
	errs     []string
}

// FakeReply is one scripted answer.
type FakeReply struct {
	Status     int    // default 200
	RetryAfter string // Retry-After header
	Body       string // raw body instead of a completion (e.g. not JSON)
	Delay      time.Duration

	Content      string
	ToolCalls    []FakeToolCall
	FinishReason string // default tool_calls or stop
	PromptTokens int    // default: request size / 4
	OutTokens    int    // default 20

	// Check inspects the request; an error fails the scenario (Errors).
	Check func(FakeRequest) error
}

// FakeToolCall is a tool call the fake model makes. Arguments is sent as
// is, so it can be malformed on purpose.
type FakeToolCall struct {
	ID, Name, Arguments string
}

// FakeRequest is what the server received.
type FakeRequest struct {
	N             int
	Authorization string
	Model         string
	Messages      []FakeMessage
	Tools         []string
	Raw           []byte
}

// FakeMessage is one message of a request.
type FakeMessage struct {
	Role       string `json:"role"`
	Content    string `json:"content"`
	ToolCallID string `json:"tool_call_id"`
	Name       string `json:"name"`
	ToolCalls  []struct {
		ID       string `json:"id"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// LastTool returns the content of the request's last tool message.
func (r FakeRequest) LastTool() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "tool" {
			return r.Messages[i].Content
		}
	}
	return ""
}

// Call is a reply with one tool call.
func Call(name, args string) FakeReply {
	return FakeReply{ToolCalls: []FakeToolCall{{Name: name, Arguments: args}}}
}

// Expect adds a request check to a reply: the last tool result must
// contain want.
func (r FakeReply) Expect(want string) FakeReply {
	prev := r.Check
	r.Check = func(req FakeRequest) error {
		if prev != nil {
			if err := prev(req); err != nil {
				return err
			}
		}
		if got := req.LastTool(); !strings.Contains(got, want) {
			return fmt.Errorf("request %d: last tool result %q does not contain %q", req.N, clipText(got, 400), want)
		}
		return nil
	}
	return r
}

// StartFakeLLM starts the server for the test's lifetime.
func StartFakeLLM(t testing.TB, script ...FakeReply) *FakeLLM {
	f := &FakeLLM{script: script}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.URL = f.srv.URL + "/v1"
	t.Cleanup(f.srv.Close)
	return f
}

// Requests returns what the server received so far.
func (f *FakeLLM) Requests() []FakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]FakeRequest(nil), f.requests...)
}

// Errors returns failed checks and unscripted requests.
func (f *FakeLLM) Errors() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.errs...)
}

// Remaining is how many scripted replies are left.
func (f *FakeLLM) Remaining() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.script) - f.next
}

func (f *FakeLLM) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, http.StatusNotFound)
		return
	}
	raw, _ := io.ReadAll(r.Body)
	var body struct {
		Model    string        `json:"model"`
		Messages []FakeMessage `json:"messages"`
		Tools    []struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		} `json:"tools"`
	}
	f.mu.Lock()
	req := FakeRequest{N: len(f.requests) + 1, Authorization: r.Header.Get("Authorization"), Raw: raw}
	if err := json.Unmarshal(raw, &body); err != nil {
		f.errs = append(f.errs, fmt.Sprintf("request %d is not JSON: %v", req.N, err))
	}
	req.Model, req.Messages = body.Model, body.Messages
	for _, t := range body.Tools {
		req.Tools = append(req.Tools, t.Function.Name)
	}
	f.requests = append(f.requests, req)
	if f.next >= len(f.script) {
		f.errs = append(f.errs, fmt.Sprintf("request %d beyond the script (%d replies)", req.N, len(f.script)))
		f.mu.Unlock()
		http.Error(w, `{"error":{"message":"fake LLM: script exhausted","type":"server_error"}}`, http.StatusInternalServerError)
		return
	}
	reply := f.script[f.next]
	f.next++
	if reply.Check != nil {
		if err := reply.Check(req); err != nil {
			f.errs = append(f.errs, err.Error())
		}
	}
	f.mu.Unlock()

	if reply.Delay > 0 {
		select {
		case <-time.After(reply.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if reply.RetryAfter != "" {
		w.Header().Set("Retry-After", reply.RetryAfter)
	}
	status := reply.Status
	if status == 0 {
		status = http.StatusOK
	}
	if reply.Body != "" || status != http.StatusOK {
		b := reply.Body
		if b == "" {
			b = fmt.Sprintf(`{"error":{"message":"fake LLM status %d","type":"server_error"}}`, status)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, b)
		return
	}
	writeCompletion(w, req, reply, len(raw))
}

func writeCompletion(w http.ResponseWriter, req FakeRequest, reply FakeReply, size int) {
	type fn struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
	type call struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function fn     `json:"function"`
	}
	msg := map[string]any{"role": "assistant", "content": reply.Content}
	calls := []call{}
	for i, c := range reply.ToolCalls {
		id := c.ID
		if id == "" {
			id = "call_" + strconv.Itoa(req.N) + "_" + strconv.Itoa(i+1)
		}
		calls = append(calls, call{ID: id, Type: "function", Function: fn{Name: c.Name, Arguments: c.Arguments}})
	}
	finish := reply.FinishReason
	if len(calls) > 0 {
		msg["tool_calls"] = calls
		if finish == "" {
			finish = "tool_calls"
		}
	} else if finish == "" {
		finish = "stop"
	}
	prompt, out := reply.PromptTokens, reply.OutTokens
	if prompt == 0 {
		prompt = size / 4
	}
	if out == 0 {
		out = 20
	}
	resp := map[string]any{
		"id": "chatcmpl-fake-" + strconv.Itoa(req.N), "object": "chat.completion", "created": 1700000000, "model": req.Model,
		"choices": []map[string]any{{"index": 0, "message": msg, "finish_reason": finish}},
		"usage":   map[string]int{"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
