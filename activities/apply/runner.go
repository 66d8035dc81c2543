package apply

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// RunOptions is one ansible-playbook run over an unpacked bundle.
type RunOptions struct {
	Dir        string // bundle directory holding playbook.yml
	Playbook   string // default playbook.yml
	Inventory  string // one path, or several separated by commas
	KnownHosts string // pinned host keys; host keys are never accepted blindly
	SSHKey     string
	Limit      []string
	Check      bool      // --check --diff
	Connection string    // "" (ssh) or "local" for tests
	Output     io.Writer // full output, streamed
	ExtraSSH   []string  // extra ssh options (e.g. a certificate)
}

// HostRecap is one line of the PLAY RECAP.
type HostRecap struct {
	Host                                                        string
	OK, Changed, Unreachable, Failed, Skipped, Rescued, Ignored int
}

// Recap is the parsed PLAY RECAP of a run.
type Recap struct {
	Hosts []HostRecap
}

// Totals sums the recap over hosts.
func (r Recap) Totals() HostRecap {
	var t HostRecap
	for _, h := range r.Hosts {
		t.OK += h.OK
		t.Changed += h.Changed
		t.Unreachable += h.Unreachable
		t.Failed += h.Failed
		t.Skipped += h.Skipped
	}
	return t
}

// String renders the recap on one line per host.
func (r Recap) String() string {
	var b strings.Builder
	for i, h := range r.Hosts {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: ok=%d changed=%d unreachable=%d failed=%d", h.Host, h.OK, h.Changed, h.Unreachable, h.Failed)
	}
	return b.String()
}

// FirstFailure returns ansible's first "fatal:" line (a failed or
// unreachable host with its message), cut to max bytes, or "".
func FirstFailure(out []byte, max int) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "fatal: [") {
			continue
		}
		if len(line) > max {
			line = strings.ToValidUTF8(line[:max], "") + "…"
		}
		return line
	}
	return ""
}

var recapRe = regexp.MustCompile(`^(\S+)\s+:\s+(.*)$`)
var fieldRe = regexp.MustCompile(`(\w+)=(\d+)`)

// ParseRecap reads the PLAY RECAP section of ansible-playbook output.
func ParseRecap(out []byte) (Recap, error) {
	var r Recap
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	inRecap := false
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " ")
		if strings.HasPrefix(line, "PLAY RECAP") {
			inRecap = true
			continue
		}
		if !inRecap || strings.TrimSpace(line) == "" {
			continue
		}
		m := recapRe.FindStringSubmatch(line)
		if m == nil || !strings.Contains(m[2], "ok=") {
			continue
		}
		h := HostRecap{Host: m[1]}
		for _, f := range fieldRe.FindAllStringSubmatch(m[2], -1) {
			n, _ := strconv.Atoi(f[2])
			switch f[1] {
			case "ok":
				h.OK = n
			case "changed":
				h.Changed = n
			case "unreachable":
				h.Unreachable = n
			case "failed":
				h.Failed = n
			case "skipped":
				h.Skipped = n
			case "rescued":
				h.Rescued = n
			case "ignored":
				h.Ignored = n
			}
		}
		r.Hosts = append(r.Hosts, h)
	}
	if len(r.Hosts) == 0 {
		return r, errors.New("no PLAY RECAP in ansible-playbook output")
	}
	return r, nil
}

// Run executes ansible-playbook and returns the recap. A failed play is a
// Recap with Failed > 0 and a nil error; err is for runs that could not
// happen at all (no ansible, no recap).
func Run(ctx context.Context, o RunOptions) (Recap, time.Duration, error) {
	pb := o.Playbook
	if pb == "" {
		pb = "playbook.yml"
	}
	var args []string
	for _, inv := range strings.Split(o.Inventory, ",") {
		args = append(args, "-i", inv)
	}
	args = append(args, pb)
	if o.Check {
		args = append(args, "--check", "--diff")
	}
	if len(o.Limit) > 0 {
		args = append(args, "--limit", strings.Join(o.Limit, ","))
	}
	if o.Connection != "" {
		args = append(args, "-c", o.Connection)
	}
	if o.SSHKey != "" {
		args = append(args, "--private-key", o.SSHKey)
	}
	cmd := exec.CommandContext(ctx, "ansible-playbook", args...)
	cmd.Dir = o.Dir
	sshArgs := append([]string{"-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=auto", "-o", "ControlPersist=60s"}, o.ExtraSSH...)
	if o.KnownHosts != "" {
		sshArgs = append(sshArgs, "-o", "UserKnownHostsFile="+o.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null")
	}
	cmd.Env = append(os.Environ(),
		"ANSIBLE_HOST_KEY_CHECKING=True",
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_FORCE_COLOR=0",
		"ANSIBLE_RETRY_FILES_ENABLED=0",
		// One SSH round trip per task instead of several: targets run as
		// root, so requiretty is not in the way.
		"ANSIBLE_PIPELINING=True",
		"ANSIBLE_STDOUT_CALLBACK=default",
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(o.Dir, ".ansible-tmp"),
		"ANSIBLE_SSH_ARGS="+strings.Join(sshArgs, " "),
		"ANSIBLE_CONFIG="+filepath.Join(o.Dir, "ansible.cfg"),
	)
	// Keep the recap section in memory; stream everything to o.Output.
	var tail tailBuffer
	tail.max = 256 * 1024
	w := io.Writer(&tail)
	if o.Output != nil {
		w = io.MultiWriter(&tail, o.Output)
	}
	cmd.Stdout, cmd.Stderr = w, w
	start := time.Now()
	runErr := cmd.Run()
	took := time.Since(start)
	recap, perr := ParseRecap(tail.Bytes())
	if perr != nil {
		if runErr != nil {
			return recap, took, fmt.Errorf("ansible-playbook: %w: %s", runErr, lastLines(tail.Bytes(), 8))
		}
		return recap, took, fmt.Errorf("ansible-playbook: %w", perr)
	}
	return recap, took, nil
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte { return t.buf }

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
