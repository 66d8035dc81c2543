package remote

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Exec defaults.
const (
	DefaultExecTimeout = 10 * time.Minute
	// DefaultOutputCap is how many bytes of each stream Exec keeps (half
	// head, half tail). The full text goes to the sinks.
	DefaultOutputCap = 64 << 10
	// killTimeout bounds the clean-up session that kills a timed-out
	// command's processes.
	killTimeout = 10 * time.Second
	// drainGrace bounds the wait for a killed session's output to end.
	drainGrace = 5 * time.Second
	// markerVar tags every process Airlock starts, so a timed-out command
	// and its children can be found and killed.
	markerVar = "AIRLOCK_EXEC_ID"
)

// ExecOptions tune one Exec.
type ExecOptions struct {
	// Timeout kills the command after this long; 0 means DefaultExecTimeout.
	Timeout time.Duration
	// OutputCap is the number of bytes kept per stream in the result,
	// split between head and tail; 0 means DefaultOutputCap.
	OutputCap int
	// Stdout and Stderr, when set, receive the complete streams as they
	// arrive. They may be the same writer: writes are serialised. A sink
	// error does not stop the command; it is returned after it ends.
	Stdout io.Writer
	Stderr io.Writer
}

// ExecResult describes a finished command. A non-zero ExitCode is not a Go
// error.
type ExecResult struct {
	// ExitCode is the command's exit status; -1 if it was killed because
	// of a timeout or cancellation.
	ExitCode int
	// Signal is set (e.g. "KILL") when the command died from a signal.
	Signal   string
	Stdout   Output
	Stderr   Output
	Duration time.Duration
}

// execCommand runs the script that arrives on stdin with bash. Bash reads
// it from fd 3 rather than as `bash -s` so the script's own commands get
// /dev/null as stdin: under `bash -s` a command that reads stdin (read, an
// apt prompt, cat) would swallow the rest of the script.
const execCommand = "bash /dev/fd/3 3<&0 </dev/null"

// Exec runs script with bash as root on the sandbox. The script travels
// over the SSH session's stdin, never through a shell-quoted command line,
// so heredocs, quotes, variables and any bytes arrive unchanged.
//
// On timeout or ctx cancellation the command and every process it started
// (found by an environment marker) are killed; the error then wraps
// ErrTimeout or the context error, and the returned result holds the output
// captured so far.
func (c *Client) Exec(ctx context.Context, script string, opts ExecOptions) (ExecResult, error) {
	capacity := opts.OutputCap
	if capacity <= 0 {
		capacity = DefaultOutputCap
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultExecTimeout
	}
	capture := newExecCapture(capacity, opts.Stdout, opts.Stderr)
	res, err := c.run(ctx, sessionSpec{
		command: execCommand,
		stdin:   strings.NewReader(script),
		stdout:  streamWriter{c: capture},
		stderr:  streamWriter{c: capture, stderr: true},
		timeout: timeout,
	})
	stdout, stderr, sinkErr := capture.seal()
	result := ExecResult{
		ExitCode: res.exitCode, Signal: res.signal,
		Stdout: stdout, Stderr: stderr, Duration: res.duration,
	}
	if err != nil {
		return result, fmt.Errorf("exec on %s: %w", c.name, err)
	}
	if sinkErr != nil {
		return result, fmt.Errorf("exec on %s: output sink: %w", c.name, sinkErr)
	}
	return result, nil
}

// Probe runs the shell builtin `true` through the login shell, without
// Exec's wrapper: the cheapest proof that a command runs (one exec in the
// guest instead of two), for readiness checks.
func (c *Client) Probe(ctx context.Context, timeout time.Duration) error {
	res, err := c.run(ctx, sessionSpec{command: "true", bare: true, stdin: strings.NewReader(""),
		stdout: io.Discard, stderr: io.Discard, timeout: timeout})
	if err != nil {
		return fmt.Errorf("probe %s: %w", c.name, err)
	}
	if res.exitCode != 0 {
		return fmt.Errorf("probe %s: `true` exited %d", c.name, res.exitCode)
	}
	return nil
}

type sessionSpec struct {
	command        string // run by the login shell, prefixed with the marker
	stdin          io.Reader
	stdout, stderr io.Writer // must never return errors
	timeout        time.Duration
	noKill         bool // the kill session itself: don't recurse
	bare           bool // no marker: the login shell runs command as it is (implies noKill)
}

type sessionResult struct {
	exitCode int
	signal   string
	duration time.Duration
}

// run takes a session slot and runs one command.
func (c *Client) run(ctx context.Context, spec sessionSpec) (sessionResult, error) {
	if err := c.begin(ctx); err != nil {
		return sessionResult{}, err
	}
	defer c.end(true)
	return c.session(ctx, spec)
}

func (c *Client) session(ctx context.Context, spec sessionSpec) (sessionResult, error) {
	var res sessionResult
	deadline := time.NewTimer(spec.timeout)
	defer deadline.Stop()
	openCtx, cancelOpen := context.WithTimeout(ctx, spec.timeout)
	sess, err := c.newSession(openCtx)
	cancelOpen()
	if err != nil {
		return res, err
	}
	defer sess.Close()

	id := newMarker()
	stdin, err := sess.StdinPipe()
	if err != nil {
		return res, fmt.Errorf("stdin pipe: %w", err)
	}
	sess.Stdout, sess.Stderr = spec.stdout, spec.stderr
	start := time.Now()
	// The marker goes in as an SSH environment request where sshd accepts
	// it (the golden image: `AcceptEnv AIRLOCK_EXEC_ID`), which spares the
	// guest an `env` exec per command (45 ms under TCG, more right after a
	// restore); elsewhere through `env`.
	var command string
	switch {
	case spec.bare:
		command = spec.command
	case sess.Setenv(markerVar, id) == nil:
		command = "exec " + spec.command
	default:
		command = fmt.Sprintf("exec env %s=%s %s", markerVar, id, spec.command)
	}
	if err := sess.Start(command); err != nil {
		return res, fmt.Errorf("start: %w", err)
	}
	go func() {
		// The remote side may stop reading early (the script exits); that
		// is its business, not an error.
		_, _ = io.Copy(stdin, spec.stdin)
		_ = stdin.Close()
	}()
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()

	var stopErr error
	select {
	case err = <-waited:
	case <-deadline.C:
		stopErr = fmt.Errorf("%w after %s", ErrTimeout, spec.timeout)
	case <-ctx.Done():
		stopErr = ctx.Err()
	}
	if stopErr != nil {
		if !spec.noKill && !spec.bare {
			c.killMarked(id)
		}
		_ = sess.Signal(ssh.SIGKILL)
		_ = sess.Close()
		grace := time.NewTimer(drainGrace)
		select {
		case <-waited:
		case <-grace.C:
		}
		grace.Stop()
		res.duration = time.Since(start)
		res.exitCode = -1
		return res, stopErr
	}
	res.duration = time.Since(start)

	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.exitCode = exitErr.ExitStatus()
		res.signal = exitErr.Signal()
	case errors.As(err, &missing):
		return res, fmt.Errorf("command ended without an exit status (connection lost?): %w", err)
	default:
		return res, fmt.Errorf("wait: %w", err)
	}
	return res, nil
}

// killScript kills every process whose environment carries the marker. It
// repeats a few rounds to catch children forked while it ran. Processes
// that clear their environment or daemonise with a fresh one escape; that
// is accepted.
const killScript = `id=$1
for round in 1 2 3 4 5; do
  found=
  for d in /proc/[0-9]*; do
    while IFS= read -r -d '' kv; do
      if [ "$kv" = "` + markerVar + `=$id" ]; then kill -KILL "${d#/proc/}" && found=1; break; fi
    done < "$d/environ"
  done 2>/dev/null
  [ -n "$found" ] || exit 0
done`

// killMarked runs the kill script in a new session. If even that cannot
// finish, the connection is unusable and is closed so the pool re-dials.
func (c *Client) killMarked(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	select {
	case c.kills <- struct{}{}:
		defer func() { <-c.kills }()
	case <-ctx.Done():
		c.Close()
		return
	}
	var discard limitedBuffer
	_, err := c.session(ctx, sessionSpec{
		command: "bash -c " + shellQuote(killScript) + " airlock-kill " + id,
		stdin:   strings.NewReader(""),
		stdout:  &discard, stderr: &discard,
		timeout: killTimeout,
		noKill:  true,
	})
	if err != nil {
		c.Close()
	}
}

func newMarker() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// shellQuote quotes s as one word for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
