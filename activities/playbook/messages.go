package playbook

// GenerateInput asks the control worker for a playbook bundle built from the
// stored classified changes and the agent's command log.
type GenerateInput struct {
	WorkflowID string          `json:"workflow_id"`
	ChangesRef string          `json:"changes_ref"`
	CommandLog []CommandRecord `json:"command_log,omitempty"`
}

// EditInput builds a new bundle from a playbook edited by an approver,
// keeping the files of the bundle it was based on.
type EditInput struct {
	WorkflowID string `json:"workflow_id"`
	BaseRef    string `json:"base_ref"`
	Playbook   string `json:"playbook"`
	By         string `json:"by"`
}

// Plan references a stored bundle. PlanHash is the sha256 approvals name.
type Plan struct {
	PlanHash  string   `json:"plan_hash"`
	BundleRef string   `json:"bundle_ref"`
	Playbook  string   `json:"playbook"` // the playbook text, capped for history
	Tasks     int      `json:"tasks"`
	Flags     []string `json:"flags,omitempty"`    // e.g. not idempotent by construction
	Findings  []string `json:"findings,omitempty"` // syntax-check and ansible-lint
	Edited    bool     `json:"edited,omitempty"`
	EditedBy  string   `json:"edited_by,omitempty"`
}

// CommandRecord is one command the agent ran, as the playbook generator
// sees it: the generator never replays these, it only cites them.
type CommandRecord struct {
	Command  string `json:"command"`
	ExitCode int    `json:"exit_code"`
}
