package apply

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/activities/heartbeat"
	"github.com/airlock-dev/airlock/activities/playbook"
	"github.com/airlock-dev/airlock/store/audit"
)

// Artifacts is the part of the store this worker uses.
type Artifacts = audit.Artifacts

// Activities runs approved bundles against one environment.
type Activities struct {
	Env        string
	Inventory  string
	KnownHosts string
	SSHKey     string
	Artifacts  Artifacts
	OutputCap  int // bytes of output kept in the result; default 4 KiB
	// SSHArgs are extra OpenSSH options for this environment.
	SSHArgs []string
	// Connection overrides ansible's connection plugin (tests use "local").
	Connection string
}

// ErrTypePlanMismatch marks a bundle whose hash is not the approved plan.
const ErrTypePlanMismatch = "PlanMismatch"

// ApplyPlaybook runs the bundle with ansible-playbook, in check mode or for
// real. It refuses a bundle whose plan hash is not the approved one.
func (a *Activities) ApplyPlaybook(ctx context.Context, in Input) (Result, error) {
	if in.BundleRef == "" || in.PlanHash == "" {
		return Result{}, temporal.NewNonRetryableApplicationError("apply needs bundle_ref and plan_hash", "BadInput", nil)
	}
	raw, err := a.Artifacts.ReadArtifact(ctx, in.BundleRef)
	if err != nil {
		return Result{}, fmt.Errorf("load bundle %s: %w", in.BundleRef, err)
	}
	b, err := playbook.ReadTar(bytes.NewReader(raw))
	if err != nil {
		return Result{}, temporal.NewNonRetryableApplicationError(err.Error(), "BadInput", err)
	}
	if b.PlanHash != in.PlanHash {
		msg := fmt.Sprintf("bundle %s has plan hash %s, but %s was approved", in.BundleRef, b.PlanHash, in.PlanHash)
		return Result{}, temporal.NewNonRetryableApplicationError(msg, ErrTypePlanMismatch, nil)
	}
	dir, err := os.MkdirTemp("", "airlock-apply-")
	if err != nil {
		return Result{}, fmt.Errorf("apply: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := b.WriteDir(dir); err != nil {
		return Result{}, err
	}

	out, err := os.CreateTemp("", "airlock-apply-out-")
	if err != nil {
		return Result{}, fmt.Errorf("apply: %w", err)
	}
	defer os.Remove(out.Name())
	defer out.Close()

	stop := heartbeat.Every(ctx, 10*time.Second, "ansible-playbook")
	recap, took, runErr := Run(ctx, RunOptions{
		Dir: dir, Inventory: a.Inventory, KnownHosts: a.KnownHosts, SSHKey: a.SSHKey,
		Limit: in.Hosts, Check: in.Check, Connection: a.Connection, Output: out, ExtraSSH: a.SSHArgs,
	})
	stop()

	res := Result{Check: in.Check, DurationMs: took.Milliseconds()}
	res.Output, res.OutputRef, err = a.keepOutput(ctx, out)
	if err != nil {
		return res, err
	}
	if runErr != nil {
		// ansible could not run at all (no recap): worth a retry only in
		// check mode, which the workflow decides through its policy.
		return res, fmt.Errorf("%w (output %s)", runErr, res.OutputRef)
	}
	tot := recap.Totals()
	res.Changed, res.Failed, res.Unreachable = tot.Changed, tot.Failed, tot.Unreachable
	res.Recap = recap.String()
	res.OK = tot.Failed == 0 && tot.Unreachable == 0
	if !res.OK {
		res.Reason = a.firstFailure(out)
	}
	return res, nil
}

// keepOutput stores the full output as an artifact and returns its head
// and tail for history.
func (a *Activities) keepOutput(ctx context.Context, f *os.File) (string, string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", "", fmt.Errorf("apply output: %w", err)
	}
	ref, err := a.Artifacts.PutArtifact(ctx, "apply-output", f)
	if err != nil {
		return "", "", fmt.Errorf("store apply output: %w", err)
	}
	capBytes := a.OutputCap
	if capBytes <= 0 {
		capBytes = 4096
	}
	st, err := f.Stat()
	if err != nil {
		return "", ref.ID, fmt.Errorf("apply output: %w", err)
	}
	return headTail(f, st.Size(), capBytes), ref.ID, nil
}

// firstFailure reads ansible's first "fatal:" line back from the output.
func (a *Activities) firstFailure(f *os.File) string {
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	b := make([]byte, min(st.Size(), 8<<20))
	n, _ := f.ReadAt(b, 0)
	return clean([]byte(FirstFailure(b[:n], 400)))
}

func headTail(f *os.File, size int64, capBytes int) string {
	if size <= int64(capBytes) {
		b := make([]byte, size)
		_, _ = f.ReadAt(b, 0)
		return clean(b)
	}
	half := int64(capBytes / 2)
	head := make([]byte, half)
	tail := make([]byte, half)
	_, _ = f.ReadAt(head, 0)
	_, _ = f.ReadAt(tail, size-half)
	return clean(head) + fmt.Sprintf("\n… %d bytes omitted …\n", size-2*half) + clean(tail)
}

// clean makes output safe for JSON history and Postgres text.
func clean(b []byte) string {
	return strings.ReplaceAll(strings.ToValidUTF8(string(b), "\uFFFD"), "\x00", "")
}
