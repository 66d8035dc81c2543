package playbook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/store/audit"
)

// Artifacts is the part of the store this worker uses.
type Artifacts = audit.Artifacts

// Activities runs on the control queue: it turns captured changes into a
// checked bundle, and an approver's edit into a new bundle.
type Activities struct {
	Artifacts Artifacts
}

// MaxPlaybookInHistory caps the playbook text carried in the Plan.
const MaxPlaybookInHistory = 32 << 10

// GeneratePlaybook builds, checks and stores the bundle for a capture.
func (a *Activities) GeneratePlaybook(ctx context.Context, in GenerateInput) (Plan, error) {
	raw, err := a.Artifacts.ReadArtifact(ctx, in.ChangesRef)
	if err != nil {
		return Plan{}, fmt.Errorf("load changes %s: %w", in.ChangesRef, err)
	}
	var capt changes.Capture
	if err := json.Unmarshal(raw, &capt); err != nil || capt.Changes == nil {
		return Plan{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("changes artifact %s is not a capture: %v", in.ChangesRef, err), "BadInput", err)
	}
	b, err := Generate(capt.Changes, capt.Contents, in.CommandLog)
	if err != nil {
		return Plan{}, temporal.NewNonRetryableApplicationError("generate playbook: "+err.Error(), "BadInput", err)
	}
	return a.checkAndStore(ctx, b, false, "")
}

// PlanFromEdit replaces the playbook of a stored bundle with an approver's
// edit. A playbook that does not pass the syntax check is refused.
func (a *Activities) PlanFromEdit(ctx context.Context, in EditInput) (Plan, error) {
	if len(in.Playbook) > MaxBundleBytes {
		return Plan{}, temporal.NewNonRetryableApplicationError("edited playbook is too large", "BadInput", nil)
	}
	raw, err := a.Artifacts.ReadArtifact(ctx, in.BaseRef)
	if err != nil {
		return Plan{}, fmt.Errorf("load bundle %s: %w", in.BaseRef, err)
	}
	base, err := ReadTar(bytes.NewReader(raw))
	if err != nil {
		return Plan{}, temporal.NewNonRetryableApplicationError(err.Error(), "BadInput", err)
	}
	b := base.WithPlaybook([]byte(in.Playbook))
	p, err := a.checkAndStore(ctx, b, true, in.By)
	if err != nil {
		return p, err
	}
	return p, nil
}

func (a *Activities) checkAndStore(ctx context.Context, b *Bundle, edited bool, by string) (Plan, error) {
	dir, err := os.MkdirTemp("", "airlock-plan-")
	if err != nil {
		return Plan{}, fmt.Errorf("plan: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := b.WriteDir(dir); err != nil {
		return Plan{}, err
	}
	f, err := Check(ctx, dir)
	if err != nil {
		return Plan{}, fmt.Errorf("check playbook: %w", err)
	}
	if edited && !f.SyntaxOK {
		return Plan{}, temporal.NewNonRetryableApplicationError("the edited playbook fails ansible-playbook --syntax-check: "+firstMessage(f), "BadPlaybook", nil)
	}
	var buf bytes.Buffer
	if err := b.WriteTar(&buf); err != nil {
		return Plan{}, err
	}
	ref, err := a.Artifacts.PutArtifact(ctx, "bundle", &buf)
	if err != nil {
		return Plan{}, fmt.Errorf("store bundle: %w", err)
	}
	text := string(b.Playbook())
	if len(text) > MaxPlaybookInHistory {
		text = text[:MaxPlaybookInHistory] + fmt.Sprintf("\n# … %d more bytes in bundle %s\n", len(b.Playbook())-MaxPlaybookInHistory, ref.ID)
	}
	p := Plan{PlanHash: b.PlanHash, BundleRef: ref.ID, Playbook: text, Tasks: b.Tasks, Flags: b.Flags, Edited: edited, EditedBy: by}
	if !f.SyntaxOK {
		p.Findings = append(p.Findings, "syntax-check failed")
	}
	if !f.LintRan {
		p.Findings = append(p.Findings, "ansible-lint did not run")
	}
	for _, it := range f.Items {
		p.Findings = append(p.Findings, fmt.Sprintf("%s %s %s:%d %s", it.Tool, it.Severity, it.Path, it.Line, it.Message))
	}
	return p, nil
}

func firstMessage(f Findings) string {
	for _, it := range f.Items {
		if it.Tool == "syntax-check" {
			return it.Message
		}
	}
	return "see findings"
}
