// Package tools is the agent's tool layer as pure Go: the tool names and
// their JSON schemas, which tools change nothing (read-only mode), strict
// argument parsing with errors a model can act on, the destructive-command
// deny-list, file edits, and the LLM messages that cross the Temporal
// boundary. It does no I/O, so the deterministic workflow code, the
// activities and the runbook agent all use it.
package tools

import (
	"encoding/json"
	"sort"
)

// Tool names. They are part of the contract with models and runbooks.
const (
	ListSandboxes   = "list_sandboxes"
	CreateSandbox   = "create_sandbox"
	DestroySandbox  = "destroy_sandbox"
	StartSandbox    = "start_sandbox"
	StopSandbox     = "stop_sandbox"
	RunCommand      = "run_command"
	ReadFile        = "read_file"
	EditFile        = "edit_file"
	CreateSnapshot  = "create_snapshot"
	RestoreSnapshot = "restore_snapshot"
	Diff            = "diff"
	CreatePlaybook  = "create_playbook"
	AddPlaybookTask = "add_playbook_task"
	ListPlaybooks   = "list_playbooks"
	GetPlaybook     = "get_playbook"
	RequestApproval = "request_approval"
	RequestEgress   = "request_egress"
	Finish          = "finish"
)

// Where a tool runs.
const (
	RunsOnHost     = "host"     // an activity on the hypervisor host's queue
	RunsInWorkflow = "workflow" // workflow state only (notes, listings)
	RunsWithHuman  = "human"    // waits for a durable answer from an approver
)

// Spec describes one tool as offered to a model.
type Spec struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters"` // JSON schema of the arguments object
	// ReadOnly tools change nothing in any sandbox, the network or the
	// plan. Only these are offered, and only these run, in read-only mode.
	ReadOnly bool   `json:"read_only"`
	RunsOn   string `json:"runs_on"`
}

const sandboxProp = `"sandbox":{"type":"string","description":"Sandbox name from list_sandboxes; default: the task's main sandbox"}`

var specs = []Spec{
	{ListSandboxes, "List this task's sandboxes with their state and snapshots.", obj(``, ``), true, RunsInWorkflow},
	{CreateSandbox, "Create an extra scratch sandbox from the task's image, e.g. to try something risky. Its changes are NOT part of the task's result; only the main sandbox is diffed. At most 2 extra sandboxes.", obj(``, ``), false, RunsOnHost},
	{DestroySandbox, "Destroy an extra sandbox created with create_sandbox. The main sandbox cannot be destroyed.", obj(`"sandbox":{"type":"string"}`, `"sandbox"`), false, RunsOnHost},
	{StartSandbox, "Start a stopped sandbox and wait until it accepts commands.", obj(sandboxProp, ``), false, RunsOnHost},
	{StopSandbox, "Shut a sandbox down cleanly (use instead of shutdown/poweroff, which are refused).", obj(sandboxProp, ``), false, RunsOnHost},
	{RunCommand, "Run a bash script as root in the sandbox. Returns exit code and output (long output is truncated; the full text is stored). Destructive commands (rm -rf /, mkfs, dd to disks, reboot, ...) are refused. The sandbox has no network unless request_egress was approved.",
		obj(`"command":{"type":"string","description":"bash script, run with bash -s"},"timeout_seconds":{"type":"integer","minimum":1,"maximum":3600},`+sandboxProp, `"command"`), false, RunsOnHost},
	{ReadFile, "Read a text file as root (large files are truncated).", obj(`"path":{"type":"string","description":"absolute path"},"max_bytes":{"type":"integer","minimum":1,"maximum":65536},`+sandboxProp, `"path"`), true, RunsOnHost},
	{EditFile, "Change a file as root. op=replace swaps one exact occurrence of old_text for new_text (fails if old_text is missing or ambiguous); op=append adds content at the end (creating the file); op=write replaces the whole file with content. owner, group and mode (octal string) default to the existing file's, or root:root 0644 for a new file.",
		obj(`"path":{"type":"string"},"op":{"type":"string","enum":["replace","append","write"]},"old_text":{"type":"string"},"new_text":{"type":"string"},"content":{"type":"string"},"owner":{"type":"string"},"group":{"type":"string"},"mode":{"type":"string","pattern":"^0?[0-7]{3,4}$"},`+sandboxProp, `"path","op"`), false, RunsOnHost},
	{CreateSnapshot, "Take a named snapshot (disk and memory) of the sandbox.", obj(`"name":{"type":"string","pattern":"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$"},`+sandboxProp, `"name"`), false, RunsOnHost},
	{RestoreSnapshot, "Return the sandbox to a snapshot taken earlier; everything since is undone.", obj(`"name":{"type":"string"},`+sandboxProp, `"name"`), false, RunsOnHost},
	{Diff, "Show the classified changes (files, packages, services, users, cron, sysctl) of the main sandbox since the task began, or since a snapshot.", obj(`"since_snapshot":{"type":"string","description":"snapshot name; default: the baseline"}`, ``), true, RunsOnHost},
	{CreatePlaybook, "Start a playbook of your own notes for the reviewer. It is shown marked as agent-written; Airlock still generates and verifies the playbook that is applied from the actual diff.",
		obj(`"name":{"type":"string"},"description":{"type":"string"}`, `"name"`), false, RunsInWorkflow},
	{AddPlaybookTask, "Add a task to one of your playbooks (notes for the reviewer, not applied).",
		obj(`"playbook":{"type":"string"},"name":{"type":"string"},"module":{"type":"string","description":"e.g. ansible.builtin.copy"},"args":{"type":"object"},"notes":{"type":"string"}`, `"playbook","name","module"`), false, RunsInWorkflow},
	{ListPlaybooks, "List your playbooks.", obj(``, ``), true, RunsInWorkflow},
	{GetPlaybook, "Show one of your playbooks as YAML.", obj(`"name":{"type":"string"}`, `"name"`), true, RunsInWorkflow},
	{RequestApproval, "Ask the task's approvers a question and wait for the answer. Use before anything risky or ambiguous.",
		obj(`"question":{"type":"string"},"options":{"type":"array","items":{"type":"string"},"minItems":2,"maxItems":8}`, `"question"`), true, RunsWithHuman},
	{RequestEgress, "Ask a human for network access from the sandbox (for example to install packages). Waits for the answer; if approved, egress is open for this sandbox only, for the given minutes, then closed again.",
		obj(`"reason":{"type":"string"},"destinations":{"type":"array","items":{"type":"string"},"minItems":1,"maxItems":16},"minutes":{"type":"integer","minimum":1,"maximum":120},`+sandboxProp, `"reason","destinations"`), false, RunsWithHuman},
	{Finish, "End the task with a summary of what you did and why. The changes are then diffed, turned into a verified playbook and sent for approval.",
		obj(`"summary":{"type":"string"}`, `"summary"`), true, RunsInWorkflow},
}

var byName = func() map[string]Spec {
	m := make(map[string]Spec, len(specs))
	for _, s := range specs {
		m[s.Name] = s
	}
	return m
}()

// obj builds an object schema from property and required-list fragments.
func obj(props, required string) json.RawMessage {
	s := `{"type":"object","properties":{` + props + `},"additionalProperties":false`
	if required != "" {
		s += `,"required":[` + required + `]`
	}
	return json.RawMessage(s + `}`)
}

// All returns every tool, in a fixed order.
func All() []Spec { return append([]Spec(nil), specs...) }

// Offered returns the tools a model is offered: all of them, or in
// read-only mode only those that change nothing.
func Offered(readOnly bool) []Spec {
	out := make([]Spec, 0, len(specs))
	for _, s := range specs {
		if !readOnly || s.ReadOnly {
			out = append(out, s)
		}
	}
	return out
}

// Lookup finds a tool by name.
func Lookup(name string) (Spec, bool) {
	s, ok := byName[name]
	return s, ok
}

// IsReadOnly says whether a known tool changes nothing. Unknown tools are
// not read-only.
func IsReadOnly(name string) bool { return byName[name].ReadOnly }

// Names returns the offered tool names, sorted, for error messages.
func Names(offered []Spec) []string {
	out := make([]string, 0, len(offered))
	for _, s := range offered {
		out = append(out, s.Name)
	}
	sort.Strings(out)
	return out
}
