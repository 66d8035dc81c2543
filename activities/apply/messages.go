// Package apply runs approved playbook bundles against an environment's
// inventory with ansible-playbook: first --check --diff, then for real.
package apply

// QueuePrefix + environment is the task queue of the apply worker.
const QueuePrefix = "airlock.apply."

// Queue returns the task queue of the apply worker for env.
func Queue(env string) string { return QueuePrefix + env }

// Input applies one bundle. PlanHash must match the bundle's sha256.
type Input struct {
	WorkflowID string   `json:"workflow_id"`
	BundleRef  string   `json:"bundle_ref"`
	PlanHash   string   `json:"plan_hash"`
	Hosts      []string `json:"hosts,omitempty"` // --limit; empty means the whole inventory
	Check      bool     `json:"check"`           // --check --diff
}

// Result is the recap of one ansible-playbook run.
type Result struct {
	OK          bool   `json:"ok"`
	Check       bool   `json:"check"`
	Changed     int    `json:"changed"`
	Failed      int    `json:"failed"`
	Unreachable int    `json:"unreachable"`
	Recap       string `json:"recap"`
	Reason      string `json:"reason,omitempty"` // the first failed or unreachable host's message
	Output      string `json:"output"`           // head and tail
	OutputRef   string `json:"output_ref,omitempty"`
	DurationMs  int64  `json:"duration_ms"`
}
