package tools

// Message roles.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

// Message is one turn of the conversation, as kept in workflow state.
type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`   // assistant
	ToolCallID string     `json:"tool_call_id,omitempty"` // tool
	Name       string     `json:"name,omitempty"`         // tool: the tool's name
}

// ToolCall is one call the model asked for. Arguments is the raw text the
// model produced (it may not be JSON at all).
type ToolCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// StepInput is one LLM call. It never holds the API key: the control
// worker reads it from its own environment.
type StepInput struct {
	WorkflowID string    `json:"workflow_id"`
	Step       int       `json:"step"`
	Model      string    `json:"model,omitempty"` // empty: the configured default
	Messages   []Message `json:"messages"`
	Tools      []Spec    `json:"tools,omitempty"`
	// MaxCompletionTokens caps this reply (0: the endpoint's default).
	MaxCompletionTokens int `json:"max_completion_tokens,omitempty"`
}

// Usage is the token count the endpoint reported.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// StepResult is the model's reply.
type StepResult struct {
	Message      Message `json:"message"`
	FinishReason string  `json:"finish_reason,omitempty"`
	Usage        Usage   `json:"usage"`
	Model        string  `json:"model,omitempty"`
	// Malformed is set when the endpoint answered 200 but the body was not
	// a usable completion (not JSON, no choices). The workflow tells the
	// model and counts it as an error.
	Malformed string `json:"malformed,omitempty"`
	Attempts  int    `json:"attempts"` // HTTP attempts, retries included
}

// Error types the LLM activity returns; the workflow never retries them.
const (
	ErrTypeLLMUnavailable = "LLMUnavailable" // retries exhausted (429, 5xx, connection, timeout)
	ErrTypeLLMRefused     = "LLMRefused"     // 4xx other than 429: bad key, unknown model, bad request
	ErrTypeLLMConfig      = "LLMConfig"      // no base URL, model or key configured
)
