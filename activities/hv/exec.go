package hv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// Exec runs a script as root in a sandbox. History gets the head and tail
// of the output (OutputCap bytes); the full text becomes an artifact when
// it is longer. A non-zero exit or a timeout is a result, not an error:
// the workflow decides what it means.
func (a *Activities) Exec(ctx context.Context, in sandbox.ExecInput) (sandbox.ExecResult, error) {
	if in.Sandbox == "" {
		return sandbox.ExecResult{}, nonRetryable(fmt.Errorf("%w: exec needs a sandbox", sandbox.ErrBadInput))
	}
	c, err := a.client(ctx, in.Sandbox)
	if err != nil {
		return sandbox.ExecResult{}, err
	}
	full, done, err := tempFile("airlock-exec-")
	if err != nil {
		return sandbox.ExecResult{}, fmt.Errorf("exec: %w", err)
	}
	defer done()
	stop := heartbeat(ctx, "exec in "+in.Sandbox)
	capBytes := in.OutputCap
	if capBytes <= 0 {
		capBytes = 4096
	}
	res, err := c.Exec(ctx, in.Script, remote.ExecOptions{Timeout: in.Timeout, OutputCap: capBytes, Stdout: full, Stderr: full})
	stop()
	out := sandbox.ExecResult{ExitCode: res.ExitCode, DurationMs: res.Duration.Milliseconds()}
	if errors.Is(err, remote.ErrTimeout) {
		out.TimedOut, err = true, nil
	}
	if err != nil {
		return out, fmt.Errorf("exec in %s: %w", in.Sandbox, err)
	}
	out.TotalBytes = res.Stdout.Total + res.Stderr.Total
	out.Output = Clean(res.Stdout.String())
	if res.Stderr.Total > 0 {
		out.Output += Clean(res.Stderr.String())
	}
	if out.TotalBytes > int64(capBytes) || res.Stdout.Truncated || res.Stderr.Truncated {
		out.Truncated = true
		out.Output = capString(out.Output, capBytes)
	}
	if out.TotalBytes > 0 && (out.Truncated || strings.ContainsRune(out.Output, '\uFFFD')) {
		if _, err := full.Seek(0, io.SeekStart); err != nil {
			return out, fmt.Errorf("exec output: %w", err)
		}
		ref, err := a.Artifacts.PutArtifact(ctx, "command-output", full)
		if err != nil {
			return out, fmt.Errorf("store command output: %w", err)
		}
		out.OutputRef = ref.ID
	}
	return out, nil
}

// WriteFile writes a whole file as root, under the path policy.
func (a *Activities) WriteFile(ctx context.Context, in sandbox.WriteFileInput) (sandbox.WriteFileResult, error) {
	c, err := a.client(ctx, in.Sandbox)
	if err != nil {
		return sandbox.WriteFileResult{}, err
	}
	mode := os.FileMode(in.Mode)
	if mode == 0 {
		mode = 0o644
	}
	if err := c.WriteFile(ctx, in.Path, in.Content, mode, in.Owner, in.Group); err != nil {
		return sandbox.WriteFileResult{}, nonRetryable(fmt.Errorf("write %s in %s: %w", in.Path, in.Sandbox, err))
	}
	sum := sha256.Sum256(in.Content)
	return sandbox.WriteFileResult{Path: in.Path, Bytes: len(in.Content), SHA256: hex.EncodeToString(sum[:])}, nil
}

// ReadFile reads a file as root, under the path policy.
func (a *Activities) ReadFile(ctx context.Context, in sandbox.ReadFileInput) ([]byte, error) {
	c, err := a.client(ctx, in.Sandbox)
	if err != nil {
		return nil, err
	}
	b, err := c.ReadFile(ctx, in.Path)
	if err != nil {
		return nil, nonRetryable(fmt.Errorf("read %s in %s: %w", in.Path, in.Sandbox, err))
	}
	if in.MaxBytes > 0 && len(b) > in.MaxBytes {
		b = b[:in.MaxBytes]
	}
	return b, nil
}

// runScript runs one of Airlock's own scripts (not the agent's) with its
// stdout streamed to w. It fails on a non-zero exit.
func (a *Activities) runScript(ctx context.Context, name, script string, timeout time.Duration, w io.Writer) error {
	c, err := a.client(ctx, name)
	if err != nil {
		return err
	}
	var stderr strings.Builder
	res, err := c.Exec(ctx, script, remote.ExecOptions{Timeout: timeout, OutputCap: 8192, Stdout: w, Stderr: limitWriter{&stderr, 8192}})
	if err != nil {
		return fmt.Errorf("script in %s: %w", name, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("script in %s exited %d: %s", name, res.ExitCode, strings.TrimSpace(stderr.String()))
	}
	return nil
}

type limitWriter struct {
	w *strings.Builder
	n int
}

func (l limitWriter) Write(p []byte) (int, error) {
	if room := l.n - l.w.Len(); room > 0 {
		if len(p) > room {
			l.w.Write(p[:room])
		} else {
			l.w.Write(p)
		}
	}
	return len(p), nil
}

// Clean makes command output safe for JSON history and Postgres text:
// valid UTF-8, no NUL bytes.
func Clean(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

func capString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	half := n / 2
	return strings.ToValidUTF8(s[:half], "") + fmt.Sprintf("\n… %d bytes omitted …\n", len(s)-2*half) + strings.ToValidUTF8(s[len(s)-half:], "")
}
