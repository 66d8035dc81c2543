package virt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"libvirt.org/go/libvirt"
)

// Guest sends one QEMU guest agent command (JSON) to a domain and returns
// the JSON reply. timeoutSec > 0 bounds the wait inside libvirt.
type Guest interface {
	Command(dom *libvirt.Domain, cmd string, timeoutSec int) (string, error)
}

// QemuAgent is the real guest agent, through virDomainQemuAgentCommand.
type QemuAgent struct{}

func (QemuAgent) Command(dom *libvirt.Domain, cmd string, timeoutSec int) (string, error) {
	return dom.QemuAgentCommand(cmd, libvirt.DomainQemuAgentCommandTimeout(timeoutSec), 0)
}

// agentCall runs execute(args) and decodes the "return" member into out.
func (d *Driver) agentCall(dom *libvirt.Domain, execute string, args any, timeoutSec int, out any) error {
	req := map[string]any{"execute": execute}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("agent %s: %w", execute, err)
	}
	resp, err := d.cfg.Guest.Command(dom, string(b), timeoutSec)
	if err != nil {
		return fmt.Errorf("agent %s: %w", execute, err)
	}
	if out == nil {
		return nil
	}
	var env struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal([]byte(resp), &env); err != nil {
		return fmt.Errorf("agent %s reply: %w", execute, err)
	}
	if err := json.Unmarshal(env.Return, out); err != nil {
		return fmt.Errorf("agent %s reply: %w", execute, err)
	}
	return nil
}

// backoff waits 20ms, 40ms, ... up to max (default 200ms) between tries:
// a guest-exec right after a restore takes 0.1-1 s, and each poll is one
// cheap agent call, so a finer step costs little and saves up to half a
// second.
type backoff struct{ d, max time.Duration }

func (b *backoff) wait(ctx context.Context) error {
	limit := b.max
	if limit == 0 {
		limit = 200 * time.Millisecond
	}
	if b.d == 0 {
		b.d = 20 * time.Millisecond
	} else if b.d *= 2; b.d > limit {
		b.d = limit
	}
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// agentRetryable: the agent is not (yet) there, as opposed to a hard error.
func agentRetryable(err error) bool {
	switch lvCode(err) {
	case libvirt.ERR_AGENT_UNRESPONSIVE, libvirt.ERR_AGENT_COMMAND_TIMEOUT, libvirt.ERR_OPERATION_TIMEOUT:
		return true
	}
	return false
}

// waitAgent returns once the guest agent answers guest-ping. It fails at
// once if the domain stops running, and otherwise when ctx ends.
func (d *Driver) waitAgent(ctx context.Context, dom *libvirt.Domain) error {
	var b backoff
	for {
		err := d.agentCall(dom, "guest-ping", nil, 1, nil)
		if err == nil {
			return nil
		}
		if !agentRetryable(err) {
			return fmt.Errorf("wait for guest agent: %w", err)
		}
		if st, _, serr := dom.GetState(); serr == nil && st != libvirt.DOMAIN_RUNNING {
			return fmt.Errorf("wait for guest agent: domain is %s", stateName(st))
		}
		if werr := b.wait(ctx); werr != nil {
			return fmt.Errorf("wait for guest agent: %w (last: %v)", werr, err)
		}
	}
}

// ExecResult is a finished guest-exec.
type ExecResult struct {
	ExitCode int
	Signal   int
	Stdout   []byte
	Stderr   []byte
}

// guestExec runs path with args in the guest (no shell), waits for it
// with backoff bounded by ctx and returns its output.
func (d *Driver) guestExec(ctx context.Context, dom *libvirt.Domain, path string, args []string, stdin []byte) (ExecResult, error) {
	if args == nil {
		args = []string{}
	}
	req := map[string]any{"path": path, "arg": args, "capture-output": true}
	if stdin != nil {
		req["input-data"] = base64.StdEncoding.EncodeToString(stdin)
	}
	var started struct {
		PID int `json:"pid"`
	}
	if err := d.agentCall(dom, "guest-exec", req, 10, &started); err != nil {
		return ExecResult{}, err
	}
	b := backoff{max: 100 * time.Millisecond}
	for {
		var st struct {
			Exited   bool   `json:"exited"`
			ExitCode int    `json:"exitcode"`
			Signal   int    `json:"signal"`
			OutData  string `json:"out-data"`
			ErrData  string `json:"err-data"`
		}
		if err := d.agentCall(dom, "guest-exec-status", map[string]any{"pid": started.PID}, 10, &st); err != nil {
			return ExecResult{}, err
		}
		if st.Exited {
			res := ExecResult{ExitCode: st.ExitCode, Signal: st.Signal}
			res.Stdout, _ = base64.StdEncoding.DecodeString(st.OutData)
			res.Stderr, _ = base64.StdEncoding.DecodeString(st.ErrData)
			return res, nil
		}
		if err := b.wait(ctx); err != nil {
			return ExecResult{}, fmt.Errorf("guest-exec %s: %w", path, err)
		}
	}
}

// installScript writes files from stdin records "MODE LEN PATH\n" followed
// by LEN bytes: each file (and its directory) is created empty with its
// final mode first, so a private key is never readable by others, not even
// for a moment; then the content goes in. With arguments, it then execs
// them (the activation script), so identity costs one guest-exec.
const installScript = `umask 077
while IFS=' ' read -r mode len path; do
  case $path in /*) ;; *) echo "airlock-install: bad record" >&2; exit 2;; esac
  d=${path%/*}
  if [ -n "$d" ] && [ ! -d "$d" ]; then mkdir -p -- "$d" || exit 1; fi
  : > "$path" && chmod "$mode" -- "$path" || exit 1
  if [ "$len" -gt 0 ]; then head -c "$len" > "$path" || exit 1; fi
done
if [ $# -gt 0 ]; then exec "$@"; fi`

type guestFile struct {
	Path    string
	Mode    uint32
	Content []byte
}

// installRecords encodes files for installScript.
func installRecords(files []guestFile) []byte {
	var b []byte
	for _, f := range files {
		b = fmt.Appendf(b, "%04o %d %s\n", f.Mode, len(f.Content), f.Path)
		b = append(b, f.Content...)
	}
	return b
}

// installFiles writes files in one guest-exec and, if then is given, runs
// it afterwards in the same process (exec).
func (d *Driver) installFiles(ctx context.Context, dom *libvirt.Domain, files []guestFile, then ...string) (ExecResult, error) {
	for _, f := range files {
		if !strings.HasPrefix(f.Path, "/") || strings.ContainsAny(f.Path, "\n\x00") {
			return ExecResult{}, badInput("guest path %q", f.Path)
		}
	}
	args := append([]string{"-c", installScript, "airlock-install"}, then...)
	res, err := d.guestExec(ctx, dom, "/bin/sh", args, installRecords(files))
	if err != nil {
		return res, fmt.Errorf("install files: %w", err)
	}
	return res, nil
}

// guestHasIP reports whether the guest agent sees ip on the NIC with mac.
func (d *Driver) guestHasIP(dom *libvirt.Domain, mac, ip string) (bool, error) {
	var ifaces []struct {
		HW  string `json:"hardware-address"`
		IPs []struct {
			Addr string `json:"ip-address"`
		} `json:"ip-addresses"`
	}
	if err := d.agentCall(dom, "guest-network-get-interfaces", nil, 5, &ifaces); err != nil {
		return false, err
	}
	for _, i := range ifaces {
		if !strings.EqualFold(i.HW, mac) {
			continue
		}
		for _, a := range i.IPs {
			if a.Addr == ip {
				return true, nil
			}
		}
	}
	return false, nil
}

// waitIP returns once the guest reports its reserved address.
func (d *Driver) waitIP(ctx context.Context, dom *libvirt.Domain, mac, ip string) error {
	var b backoff
	for {
		ok, err := d.guestHasIP(dom, mac, ip)
		if err != nil && !agentRetryable(err) {
			return fmt.Errorf("wait for %s: %w", ip, err)
		}
		if ok {
			return nil
		}
		if werr := b.wait(ctx); werr != nil {
			return fmt.Errorf("wait for %s on %s: %w", ip, mac, werr)
		}
	}
}

// syncClock sets the guest clock to the host's after a restore or a
// revert (it is in the past otherwise). Same effect as `virsh domtime
// --sync`, but through guest-exec `date -s`: libvirt's SetTime makes
// qemu-ga run `hwclock -w`, which costs 1-4 s under TCG (measured), and the
// guest's RTC is not read again until the next cold boot.
func (d *Driver) syncClock(ctx context.Context, dom *libvirt.Domain) error {
	now := time.Now().UTC()
	res, err := d.guestExec(ctx, dom, "/bin/date", []string{"-u", "-s", fmt.Sprintf("@%d.%09d", now.Unix(), now.Nanosecond())}, nil)
	if err != nil {
		return fmt.Errorf("sync guest clock: %w", err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("sync guest clock: date exit %d: %s", res.ExitCode, strings.TrimSpace(string(res.Stderr)))
	}
	return nil
}
