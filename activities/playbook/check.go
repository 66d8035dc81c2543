package playbook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Finding is one problem reported by a checker.
type Finding struct {
	Tool     string `json:"tool"` // "syntax-check" or "ansible-lint"
	Rule     string `json:"rule,omitempty"`
	Severity string `json:"severity"` // error, major, minor, info, skipped
	Path     string `json:"path,omitempty"`
	Line     int    `json:"line,omitempty"`
	Message  string `json:"message"`
}

// Findings are the results of Check, recorded with the plan.
type Findings struct {
	SyntaxOK bool      `json:"syntax_ok"`
	LintRan  bool      `json:"lint_ran"` // false when ansible-lint is missing or crashed
	LintOK   bool      `json:"lint_ok"`  // ran and reported nothing
	Items    []Finding `json:"items,omitempty"`
}

// Check runs `ansible-playbook --syntax-check` and `ansible-lint --offline`
// on a copy of the bundle directory (both tools may write caches next to
// the playbook, which must not change the bundle). A missing ansible-lint,
// or one that crashes, is a finding, not an error; an error is returned only
// when the syntax check cannot run at all.
func Check(ctx context.Context, bundleDir string) (Findings, error) {
	var f Findings
	work, err := os.MkdirTemp("", "airlock-check-")
	if err != nil {
		return f, fmt.Errorf("check: %w", err)
	}
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "bundle")
	if err := os.CopyFS(dir, os.DirFS(bundleDir)); err != nil {
		return f, fmt.Errorf("check: copy bundle: %w", err)
	}
	env := append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0", "ANSIBLE_RETRY_FILES_ENABLED=0",
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(work, "tmp"), "ANSIBLE_HOME="+filepath.Join(work, "home"),
		"XDG_CACHE_HOME="+filepath.Join(work, "cache"), "NO_COLOR=1")

	out, serr, code, err := run(ctx, dir, env, "ansible-playbook", "--syntax-check", "-i", "localhost,", PlaybookFile)
	if err != nil {
		return f, fmt.Errorf("check: ansible-playbook: %w", err)
	}
	f.SyntaxOK = code == 0
	if !f.SyntaxOK {
		f.Items = append(f.Items, syntaxFinding(append(out, serr...)))
	}

	out, stderr, code, err := run(ctx, dir, env, "ansible-lint", "--offline", "--nocolor", "-f", "codeclimate", PlaybookFile)
	switch {
	case errors.Is(err, exec.ErrNotFound):
		f.Items = append(f.Items, Finding{Tool: "ansible-lint", Severity: "skipped", Message: "ansible-lint is not installed"})
		return f, nil
	case err != nil:
		return f, fmt.Errorf("check: ansible-lint: %w", err)
	}
	items, perr := parseLint(out)
	switch {
	case perr != nil || (code != 0 && code != 2):
		msg := strings.TrimSpace(string(out) + "\n" + string(stderr))
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		f.Items = append(f.Items, Finding{Tool: "ansible-lint", Severity: "skipped",
			Message: fmt.Sprintf("ansible-lint failed (exit %d): %s", code, msg)})
	default:
		f.LintRan = true
		f.LintOK = len(items) == 0 && code == 0
		f.Items = append(f.Items, items...)
	}
	return f, nil
}

// run returns the output (stdout with stderr appended, and stderr alone)
// and the exit code; err only when the command cannot run.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (out, stderr []byte, code int, err error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, nil, 0, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir, cmd.Env = dir, env
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && ctx.Err() == nil {
		return so.Bytes(), se.Bytes(), exit.ExitCode(), nil
	}
	if err != nil {
		return nil, nil, 0, err
	}
	return so.Bytes(), se.Bytes(), 0, nil
}

var syntaxLine = regexp.MustCompile(`line (\d+), column \d+`)

func syntaxFinding(out []byte) Finding {
	f := Finding{Tool: "syntax-check", Severity: "error", Path: PlaybookFile, Message: strings.TrimSpace(string(out))}
	if m := syntaxLine.FindSubmatch(out); m != nil {
		f.Line, _ = strconv.Atoi(string(m[1]))
	}
	return f
}

// parseLint reads ansible-lint's codeclimate JSON from its stdout; any
// banner before the array is skipped.
func parseLint(out []byte) ([]Finding, error) {
	start := bytes.IndexByte(out, '[')
	if start < 0 {
		return nil, fmt.Errorf("no JSON in ansible-lint output")
	}
	var raw []struct {
		CheckName   string `json:"check_name"`
		Severity    string `json:"severity"`
		Description string `json:"description"`
		Location    struct {
			Path  string          `json:"path"`
			Lines json.RawMessage `json:"lines"`
		} `json:"location"`
	}
	if err := json.NewDecoder(bytes.NewReader(out[start:])).Decode(&raw); err != nil {
		return nil, fmt.Errorf("parse ansible-lint output: %w", err)
	}
	var items []Finding
	for _, r := range raw {
		items = append(items, Finding{Tool: "ansible-lint", Rule: r.CheckName, Severity: r.Severity,
			Path: r.Location.Path, Line: lintLine(r.Location.Lines), Message: r.Description})
	}
	return items, nil
}

func lintLine(raw json.RawMessage) int {
	var l struct {
		Begin json.RawMessage `json:"begin"`
	}
	if json.Unmarshal(raw, &l) != nil {
		return 0
	}
	var n int
	if json.Unmarshal(l.Begin, &n) == nil {
		return n
	}
	var pos struct {
		Line int `json:"line"`
	}
	_ = json.Unmarshal(l.Begin, &pos)
	return pos.Line
}
