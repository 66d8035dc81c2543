package hv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// The agent's sandbox tools that need more than one SSH round trip or the
// hypervisor itself: edit_file, stop_sandbox and start_sandbox.

// maxEditDiff caps the unified diff an edit returns.
const maxEditDiff = 3000

// EditFile changes one file as root: an exact replace, an append or a
// whole write (tools.ApplyEdit), keeping the file's owner, group and mode
// unless the edit names them. The path policy applies to reads and writes.
// A refused edit (policy, text not found) is non-retryable with a message
// the model can act on.
func (a *Activities) EditFile(ctx context.Context, in tools.EditFileInput) (tools.EditFileResult, error) {
	e := in.Edit
	c, err := a.client(ctx, in.Sandbox)
	if err != nil {
		return tools.EditFileResult{}, err
	}
	exists := true
	old, err := c.ReadFile(ctx, e.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		exists, old = false, nil
	case err != nil:
		return tools.EditFileResult{}, nonRetryable(fmt.Errorf("edit %s: %w", e.Path, err))
	}
	res := tools.EditFileResult{Path: e.Path, Created: !exists, Mode: "0644", Owner: "root", Group: "root"}
	if exists {
		st, err := c.Exec(ctx, "stat -L -c '%a %U %G' -- "+quote(e.Path), remote.ExecOptions{Timeout: 30 * time.Second, OutputCap: 512})
		if err != nil {
			return res, fmt.Errorf("stat %s in %s: %w", e.Path, in.Sandbox, err)
		}
		f := strings.Fields(st.Stdout.String())
		if st.ExitCode != 0 || len(f) != 3 {
			return res, fmt.Errorf("stat %s in %s: exit %d: %s", e.Path, in.Sandbox, st.ExitCode, strings.TrimSpace(st.Stderr.String()))
		}
		res.Mode, res.Owner, res.Group = fmt.Sprintf("%04s", f[0]), f[1], f[2]
	}
	if e.Mode != "" {
		res.Mode = e.Mode
	}
	if e.Owner != "" {
		res.Owner = e.Owner
	}
	if e.Group != "" {
		res.Group = e.Group
	}
	mode, err := strconv.ParseUint(res.Mode, 8, 32)
	if err != nil {
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("edit %s: bad mode %q", e.Path, res.Mode), ErrTypeBadInput, err)
	}
	content, err := tools.ApplyEdit(e, string(old), exists)
	if err != nil {
		return res, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, err)
	}
	if err := c.WriteFile(ctx, e.Path, []byte(content), os.FileMode(mode), res.Owner, res.Group); err != nil {
		return res, nonRetryable(fmt.Errorf("edit %s in %s: %w", e.Path, in.Sandbox, err))
	}
	sum := sha256.Sum256([]byte(content))
	res.Bytes, res.SHA256 = len(content), hex.EncodeToString(sum[:])
	res.Diff = capString(Clean(changes.UnifiedDiff(e.Path, e.Path, string(old), content)), maxEditDiff)
	return res, nil
}

// StopSandbox shuts a sandbox down cleanly. Idempotent.
func (a *Activities) StopSandbox(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, sandbox.NamePrefix) {
		return nonRetryable(fmt.Errorf("%w: %q is not a sandbox name", sandbox.ErrBadInput, name))
	}
	stop := heartbeat(ctx, "stop "+name)
	defer stop()
	a.Pool.Drop(name)
	return nonRetryable(a.HV.Stop(ctx, name))
}

// StartSandbox starts a stopped sandbox again with its own disk (its SSH
// host key and certificate are already there) and returns once SSH works.
func (a *Activities) StartSandbox(ctx context.Context, name string) (sandbox.Info, error) {
	if !strings.HasPrefix(name, sandbox.NamePrefix) {
		return sandbox.Info{}, nonRetryable(fmt.Errorf("%w: %q is not a sandbox name", sandbox.ErrBadInput, name))
	}
	start := time.Now()
	stop := heartbeat(ctx, "start "+name)
	defer stop()
	a.Pool.Drop(name)
	sb, err := a.HV.Start(ctx, name, &sandbox.Identity{Hostname: name})
	if err != nil {
		return sandbox.Info{}, nonRetryable(fmt.Errorf("start %s: %w", name, err))
	}
	a.remember(name, sb.IP)
	if err := a.waitSSH(ctx, name, sb.IP); err != nil {
		return sandbox.Info{}, err
	}
	return sandbox.Info{Name: name, IP: sb.IP, Image: sb.Image, Restored: sb.Restored, ReadyMs: time.Since(start).Milliseconds(), Principal: name}, nil
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
