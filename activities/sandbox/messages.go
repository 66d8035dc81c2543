package sandbox

import "time"

// The values below cross the Temporal boundary between the AgentTask
// workflow and the hypervisor worker. They hold only bounded data: command
// output is capped and the full text is stored as an artifact, referenced
// by id and sha256.

// CreateInput asks the hypervisor worker for a ready sandbox.
type CreateInput struct {
	Owner   string         `json:"owner"`            // workflow ID
	Suffix  string         `json:"suffix,omitempty"` // e.g. "v1" for a verification clone
	Image   string         `json:"image"`
	Boot    BootPreference `json:"boot,omitempty"`
	Memory  int            `json:"memory_mib,omitempty"`
	Network string         `json:"network,omitempty"`
	// Overcommit: a human approved starting on a host short of memory.
	Overcommit bool `json:"overcommit,omitempty"`
}

// Info is a ready sandbox: SSH works with a certificate for Principal.
type Info struct {
	Name      string `json:"name"`
	IP        string `json:"ip"`
	Image     string `json:"image"`
	Restored  bool   `json:"restored"`
	ReadyMs   int64  `json:"ready_ms"`
	Principal string `json:"principal"`
}

// ExecInput runs one script as root in a sandbox.
type ExecInput struct {
	Sandbox   string        `json:"sandbox"`
	Script    string        `json:"script"`
	Timeout   time.Duration `json:"timeout"`
	OutputCap int           `json:"output_cap"`
}

// ExecResult is a finished command. Output holds the head and tail of the
// combined output; the full text is the artifact OutputRef.
type ExecResult struct {
	ExitCode   int    `json:"exit_code"`
	Output     string `json:"output"`
	TotalBytes int64  `json:"total_bytes"`
	Truncated  bool   `json:"truncated"`
	OutputRef  string `json:"output_ref,omitempty"`
	DurationMs int64  `json:"duration_ms"`
	TimedOut   bool   `json:"timed_out"`
}

// WriteFileInput writes a whole file as root, under the path policy.
type WriteFileInput struct {
	Sandbox string `json:"sandbox"`
	Path    string `json:"path"`
	Content []byte `json:"content"`
	Mode    uint32 `json:"mode"`
	Owner   string `json:"owner,omitempty"`
	Group   string `json:"group,omitempty"`
}

// WriteFileResult records what was written.
type WriteFileResult struct {
	Path   string `json:"path"`
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// ReadFileInput reads a file as root, under the path policy.
type ReadFileInput struct {
	Sandbox  string `json:"sandbox"`
	Path     string `json:"path"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

// SnapshotInput names a snapshot of a sandbox.
type SnapshotInput struct {
	Sandbox string `json:"sandbox"`
	Name    string `json:"name"`
}

// EgressInput opens or closes a sandbox's route out.
type EgressInput struct {
	Sandbox string `json:"sandbox"`
	Open    bool   `json:"open"`
}

// ManifestInput takes a manifest of a sandbox's root filesystem. With a
// baseline, only files whose size or mtime changed are hashed again.
type ManifestInput struct {
	Sandbox     string `json:"sandbox"`
	BaselineRef string `json:"baseline_ref,omitempty"`
}

// ManifestResult references the stored manifest.
type ManifestResult struct {
	Ref string `json:"ref"`
	// FilesRef (baseline only) is a tar of the configuration trees as they
	// were, kept on the host so unified diffs cannot be forged in-guest.
	FilesRef string `json:"files_ref,omitempty"`
	Entries  int    `json:"entries"`
	Hashed   int    `json:"hashed"`
	Ms       int64  `json:"ms"`
}

// CaptureInput diffs two manifests of a sandbox and stores the classified
// changes, with file contents needed for the diff and the playbook.
type CaptureInput struct {
	Sandbox        string `json:"sandbox"`
	BeforeRef      string `json:"before_ref"`
	AfterRef       string `json:"after_ref"`
	BeforeFilesRef string `json:"before_files_ref,omitempty"`
}

// CaptureResult references the stored changes; Summary holds counts only.
type CaptureResult struct {
	ChangesRef string         `json:"changes_ref"`
	Summary    map[string]int `json:"summary"`
	Text       string         `json:"text"` // short, terminal-friendly summary
}

// VerifyInput proves a playbook bundle on a fresh clone of the source.
type VerifyInput struct {
	Owner         string `json:"owner"`
	Image         string `json:"image"`
	Attempt       int    `json:"attempt"` // names the clone: sbx-<owner>-v<attempt>
	BundleRef     string `json:"bundle_ref"`
	AgentFinalRef string `json:"agent_final_ref"`
}

// VerifyResult is the outcome of verification.
type VerifyResult struct {
	Status      string `json:"status"` // verified | residual diff | not idempotent | error
	Detail      string `json:"detail,omitempty"`
	ResidualRef string `json:"residual_ref,omitempty"`
	SecondRun   string `json:"second_run,omitempty"` // recap of the idempotence run
}

// Verified says whether the plan passed verification.
func (v VerifyResult) Verified() bool { return v.Status == "verified" }
