package testsuite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/airlock-dev/airlock/activities/apply"
	"github.com/airlock-dev/airlock/activities/playbook"
	"github.com/airlock-dev/airlock/activities/sandbox"
	approvalsui "github.com/airlock-dev/airlock/approvals-ui"
	"github.com/airlock-dev/airlock/workflows"
)

// uiXSS is put into goals, file diffs and comments: it must render as text.
const uiXSS = `<script>window.__xss=1;alert("xss")</script>`

// uiFakes stands in for the activities of the three workers, registered by
// name exactly like workflows/fakes_test.go does, so that the real
// AgentTask workflow runs on a real dev server without VMs. The audit
// events the workflow records are kept and served to the UI as its store.
type uiFakes struct {
	mu       sync.Mutex
	events   []approvalsui.Event
	edits    []playbook.EditInput
	verifies []sandbox.VerifyInput
	applies  []apply.Input
	egress   []sandbox.EgressInput
}

func planFor(text string) playbook.Plan {
	sum := sha256.Sum256([]byte(text))
	h := "sha256:" + hex.EncodeToString(sum[:])
	return playbook.Plan{PlanHash: h, BundleRef: "bundle-" + h[7:19], Playbook: text, Tasks: 2}
}

const uiPlaybook = "- hosts: all\n  become: true\n  tasks:\n    - name: install nginx\n      ansible.builtin.apt: {name: nginx, state: present}\n    - name: motd\n      ansible.builtin.copy: {dest: /etc/motd, content: \"welcome\\n\"}\n"

// uiDiffText has the shape of changes.Format: sections, files, unified
// diffs indented under their file.
var uiDiffText = "Packages (1)\n  + nginx 1.22.1-9\nFiles (2)\n" +
	"  A /etc/nginx/sites-enabled/app  file 0644 0:0 120 B\n" +
	"  M /etc/motd  [content] file 0644 0:0 3 B -> file 0644 0:0 52 B\n" +
	"      --- a/etc/motd\n      +++ b/etc/motd\n      @@ -1 +1,2 @@\n      -hi\n      +welcome\n      +" + uiXSS + "\n" +
	"Services (1)\n  * nginx.service: enabled, started\n" +
	"Summary: packages +1 -0 ~0, files +1 ~1 -0 (0 folded, 0 ignored), services 1, users 0, groups 0, cron 0, sysctl 0\n"

func (f *uiFakes) Catalog(ctx context.Context) (workflows.Catalog, error) {
	return workflows.Catalog{Images: []string{"bookworm"}, Envs: []string{"prod"}, Hosts: []string{"prod-web-1"}}, nil
}

func (f *uiFakes) RecordEvent(ctx context.Context, ev workflows.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, approvalsui.Event{ID: int64(len(f.events) + 1), WorkflowID: ev.WorkflowID, Kind: ev.Kind,
		Actor: ev.Actor, At: ev.At, Data: ev.Data, ArtifactID: ev.ArtifactID})
	return nil
}

func (f *uiFakes) UpsertTask(ctx context.Context, rec workflows.TaskRecord) error { return nil }

func (f *uiFakes) GeneratePlaybook(ctx context.Context, in playbook.GenerateInput) (playbook.Plan, error) {
	return planFor(uiPlaybook), nil
}

func (f *uiFakes) PlanFromEdit(ctx context.Context, in playbook.EditInput) (playbook.Plan, error) {
	f.mu.Lock()
	f.edits = append(f.edits, in)
	f.mu.Unlock()
	p := planFor(in.Playbook)
	p.Edited, p.EditedBy = true, in.By
	return p, nil
}

func (f *uiFakes) Capacity(ctx context.Context) (sandbox.Capacity, error) {
	return sandbox.Capacity{Host: "local", FreeMemoryMiB: 8192}, nil
}

func (f *uiFakes) CreateSandbox(ctx context.Context, in sandbox.CreateInput) (sandbox.Info, error) {
	return sandbox.Info{Name: sandbox.NameFor(in.Owner, in.Suffix), IP: "10.77.0.100", Image: in.Image}, nil
}

func (f *uiFakes) DestroySandbox(ctx context.Context, name string) error { return nil }

func (f *uiFakes) Exec(ctx context.Context, in sandbox.ExecInput) (sandbox.ExecResult, error) {
	out := "Reading package lists...\nSetting up nginx (1.22.1-9) ...\n"
	return sandbox.ExecResult{ExitCode: 0, Output: out, TotalBytes: int64(len(out)), DurationMs: 1200}, nil
}

func (f *uiFakes) WriteFile(ctx context.Context, in sandbox.WriteFileInput) (sandbox.WriteFileResult, error) {
	return sandbox.WriteFileResult{Path: in.Path, Bytes: len(in.Content)}, nil
}

func (f *uiFakes) CreateSnapshot(ctx context.Context, in sandbox.SnapshotInput) error  { return nil }
func (f *uiFakes) RestoreSnapshot(ctx context.Context, in sandbox.SnapshotInput) error { return nil }

func (f *uiFakes) TakeManifest(ctx context.Context, in sandbox.ManifestInput) (sandbox.ManifestResult, error) {
	if in.BaselineRef == "" {
		return sandbox.ManifestResult{Ref: "sha256:before", Entries: 100}, nil
	}
	return sandbox.ManifestResult{Ref: "sha256:after", Entries: 102}, nil
}

func (f *uiFakes) CaptureChanges(ctx context.Context, in sandbox.CaptureInput) (sandbox.CaptureResult, error) {
	return sandbox.CaptureResult{ChangesRef: "sha256:changes", Text: uiDiffText,
		Summary: map[string]int{"packages_installed": 1, "files_added": 1, "files_modified": 1, "services_changed": 1}}, nil
}

func (f *uiFakes) VerifyPlaybook(ctx context.Context, in sandbox.VerifyInput) (sandbox.VerifyResult, error) {
	f.mu.Lock()
	f.verifies = append(f.verifies, in)
	f.mu.Unlock()
	return sandbox.VerifyResult{Status: "verified", SecondRun: "ok=3 changed=0 failed=0"}, nil
}

func (f *uiFakes) ApplyPlaybook(ctx context.Context, in apply.Input) (apply.Result, error) {
	f.mu.Lock()
	f.applies = append(f.applies, in)
	f.mu.Unlock()
	return apply.Result{OK: true, Check: in.Check, Changed: 2, Recap: "ok=3 changed=2 failed=0"}, nil
}

// SetEgress records each opening and closing of a sandbox's network.
func (f *uiFakes) SetEgress(ctx context.Context, in sandbox.EgressInput) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.egress = append(f.egress, in)
	return nil
}

// egressCalls returns the SetEgress calls for one sandbox.
func (f *uiFakes) egressCalls(sbx string) []sandbox.EgressInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sandbox.EgressInput
	for _, e := range f.egress {
		if e.Sandbox == sbx {
			out = append(out, e)
		}
	}
	return out
}

// ListEvents and Ping make the fakes the UI's audit store.
func (f *uiFakes) ListEvents(ctx context.Context, workflowID string) ([]approvalsui.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []approvalsui.Event
	for _, e := range f.events {
		if e.WorkflowID == workflowID {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *uiFakes) Ping(ctx context.Context) error { return nil }

// eventsOf returns a task's events of one kind by one actor ("" = any).
func (f *uiFakes) eventsOf(id, kind, actor string) []approvalsui.Event {
	evs, _ := f.ListEvents(context.Background(), id)
	var out []approvalsui.Event
	for _, e := range evs {
		if e.Kind == kind && (actor == "" || e.Actor == actor) {
			out = append(out, e)
		}
	}
	return out
}

func (f *uiFakes) count(id string, what string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	switch what {
	case "verify":
		for _, v := range f.verifies {
			if v.Owner == id {
				n++
			}
		}
	case "apply":
		for _, a := range f.applies {
			if a.WorkflowID == id {
				n++
			}
		}
	case "edit":
		for _, e := range f.edits {
			if e.WorkflowID == id {
				n++
			}
		}
	default:
		panic(fmt.Sprintf("count %q", what))
	}
	return n
}

// startWorkers runs the real AgentTask on the control queue and the fakes
// on the control, hypervisor ("local") and apply ("prod") queues.
func (f *uiFakes) startWorkers(c client.Client) ([]worker.Worker, error) {
	reg := func(w worker.Worker, fn any, name string) {
		w.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
	control := worker.New(c, workflows.TaskQueue, worker.Options{})
	control.RegisterWorkflowWithOptions(workflows.AgentTask, workflows.RegisterOptions())
	reg(control, f.Catalog, workflows.ActCatalog)
	reg(control, f.RecordEvent, workflows.ActRecordEvent)
	reg(control, f.UpsertTask, workflows.ActUpsertTask)
	reg(control, f.GeneratePlaybook, workflows.ActGeneratePlaybook)
	reg(control, f.PlanFromEdit, workflows.ActPlanFromEdit)

	hv := worker.New(c, sandbox.Queue(workflows.DefaultHost), worker.Options{})
	reg(hv, f.Capacity, workflows.ActCapacity)
	reg(hv, f.CreateSandbox, workflows.ActCreateSandbox)
	reg(hv, f.DestroySandbox, workflows.ActDestroySandbox)
	reg(hv, f.Exec, workflows.ActExec)
	reg(hv, f.WriteFile, workflows.ActWriteFile)
	reg(hv, f.CreateSnapshot, workflows.ActCreateSnapshot)
	reg(hv, f.RestoreSnapshot, workflows.ActRestoreSnapshot)
	reg(hv, f.TakeManifest, workflows.ActTakeManifest)
	reg(hv, f.CaptureChanges, workflows.ActCaptureChanges)
	reg(hv, f.VerifyPlaybook, workflows.ActVerifyPlaybook)
	reg(hv, f.SetEgress, workflows.ActSetEgress)

	ap := worker.New(c, apply.Queue(workflows.DefaultEnv), worker.Options{})
	reg(ap, f.ApplyPlaybook, workflows.ActApplyPlaybook)

	ws := []worker.Worker{control, hv, ap}
	for i, w := range ws {
		if err := w.Start(); err != nil {
			for _, started := range ws[:i] {
				started.Stop()
			}
			return nil, fmt.Errorf("start worker %d: %w", i, err)
		}
	}
	return ws, nil
}
