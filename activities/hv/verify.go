package hv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/airlock-dev/airlock/activities/apply"
	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/activities/playbook"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// Verification outcomes.
const (
	Verified      = "verified"
	Residual      = "residual diff"
	NotIdempotent = "not idempotent"
	VerifyError   = "error"
)

// VerifyPlaybook proves a bundle on a fresh clone of the source: apply it,
// diff the result against the agent's final state (the residual must be
// empty), then apply again (it must report changed=0). The clone is
// destroyed whatever happens.
func (a *Activities) VerifyPlaybook(ctx context.Context, in sandbox.VerifyInput) (res sandbox.VerifyResult, err error) {
	raw, err := a.Artifacts.ReadArtifact(ctx, in.BundleRef)
	if err != nil {
		return res, fmt.Errorf("load bundle %s: %w", in.BundleRef, err)
	}
	bundle, err := playbook.ReadTar(bytes.NewReader(raw))
	if err != nil {
		return res, nonRetryable(fmt.Errorf("%w: %v", sandbox.ErrBadInput, err))
	}
	agentFinal, err := a.loadManifest(ctx, in.AgentFinalRef)
	if err != nil {
		return res, err
	}
	sbx, err := a.CreateSandbox(ctx, sandbox.CreateInput{Owner: in.Owner, Suffix: fmt.Sprintf("v%d", in.Attempt), Image: in.Image})
	if err != nil {
		return res, fmt.Errorf("verification sandbox: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if derr := a.DestroySandbox(dctx, sbx.Name); derr != nil && err == nil {
			err = fmt.Errorf("destroy verification sandbox: %w", derr)
		}
	}()

	dir, err := os.MkdirTemp("", "airlock-verify-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	bdir := filepath.Join(dir, "bundle")
	if err := bundle.WriteDir(bdir); err != nil {
		return res, err
	}
	ssh, err := a.CAs.WriteOpenSSHFiles(dir, sbx.Name, 10*time.Minute)
	if err != nil {
		return res, err
	}
	inv := filepath.Join(dir, "inventory.ini")
	line := fmt.Sprintf("%s ansible_host=%s ansible_user=root ansible_python_interpreter=/usr/bin/python3\n", sbx.Name, sbx.IP)
	if err := os.WriteFile(inv, []byte(line), 0o644); err != nil {
		return res, err
	}
	run := func(n int) (apply.Recap, string, error) {
		var out bytes.Buffer
		stop := heartbeat(ctx, fmt.Sprintf("verify run %d", n))
		defer stop()
		recap, _, err := apply.Run(ctx, apply.RunOptions{
			Dir: bdir, Inventory: inv, KnownHosts: ssh.KnownHosts, SSHKey: ssh.Key, Output: &out,
			ExtraSSH: []string{"-o", "HostKeyAlias=" + sbx.Name, "-o", "IdentitiesOnly=yes"},
		})
		return recap, out.String(), err
	}

	recap, out, err := run(1)
	if err != nil {
		return sandbox.VerifyResult{Status: VerifyError, Detail: "ansible-playbook could not run: " + err.Error()}, nil
	}
	if t := recap.Totals(); t.Failed > 0 || t.Unreachable > 0 {
		return sandbox.VerifyResult{Status: VerifyError, Detail: "first run failed: " + recap.String() + "\n" + capString(Clean(failedTasks(out)), 4096)}, nil
	}

	final, err := a.TakeManifest(ctx, sandbox.ManifestInput{Sandbox: sbx.Name, BaselineRef: in.AgentFinalRef})
	if err != nil {
		return res, fmt.Errorf("manifest of verification sandbox: %w", err)
	}
	verifyFinal, err := a.loadManifest(ctx, final.Ref)
	if err != nil {
		return res, err
	}
	residual := changes.Residual(agentFinal, verifyFinal, changes.DefaultIgnoreRules())
	if !residual.Empty() {
		var text strings.Builder
		_ = changes.Format(&text, residual)
		raw, _ := json.Marshal(residual)
		ref, err := a.Artifacts.PutArtifact(ctx, "residual", bytes.NewReader(raw))
		if err != nil {
			return res, fmt.Errorf("store residual: %w", err)
		}
		return sandbox.VerifyResult{Status: Residual, Detail: capString(Clean(text.String()), 4096), ResidualRef: ref.ID}, nil
	}

	recap2, out2, err := run(2)
	if err != nil {
		return sandbox.VerifyResult{Status: VerifyError, Detail: "second run could not run: " + err.Error()}, nil
	}
	t2 := recap2.Totals()
	res = sandbox.VerifyResult{Status: Verified, SecondRun: recap2.String()}
	if t2.Changed > 0 || t2.Failed > 0 {
		res.Status = NotIdempotent
		res.Detail = "second run: " + recap2.String() + "\nchanged: " + strings.Join(changedTasks(out2), "; ")
	}
	return res, nil
}

// changedTasks lists the tasks that reported "changed" in ansible output.
func changedTasks(out string) []string {
	return tasksWith(out, "changed:")
}

func failedTasks(out string) string {
	return strings.Join(tasksWith(out, "fatal:"), "; ")
}

func tasksWith(out, prefix string) []string {
	var names []string
	task := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "TASK [") || strings.HasPrefix(l, "RUNNING HANDLER [") {
			if i, j := strings.IndexByte(l, '['), strings.LastIndexByte(l, ']'); i >= 0 && j > i {
				task = l[i+1 : j]
			}
			continue
		}
		if strings.HasPrefix(l, prefix) && task != "" {
			names = append(names, task)
			task = ""
		}
	}
	return names
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = io.ReadFull(rand.Reader, b)
	return b
}

func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }
