package virt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"libvirt.org/go/libvirt"
)

// FakeGuest answers guest agent commands for domains of libvirt's test
// driver, which has no agent: files live in memory per domain, guest-exec
// understands cat, date, the file install script, systemctl and the
// activation script, and guest-network-get-interfaces reports the
// sandbox's reserved address. Enough to run the driver end to end in
// tests without QEMU.
type FakeGuest struct {
	mu          sync.Mutex
	files       map[string]map[string]fakeFile // domain name -> path -> file
	execs       map[int]fakeExec
	next        int
	Activations map[string]int // domain name -> airlock-activate runs
}

type fakeFile struct {
	Mode    uint32
	Content []byte
}

type fakeExec struct {
	code     int
	out, err []byte
}

// File returns a file the fake guest holds for a domain.
func (f *FakeGuest) File(domain, path string) ([]byte, uint32, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ff, ok := f.files[domain][path]
	return ff.Content, ff.Mode, ok
}

// Command implements Guest.
func (f *FakeGuest) Command(dom *libvirt.Domain, cmd string, _ int) (string, error) {
	if active, err := dom.IsActive(); err != nil || !active {
		return "", libvirt.Error{Code: libvirt.ERR_OPERATION_INVALID, Message: "domain is not running"}
	}
	name, err := dom.GetName()
	if err != nil {
		return "", err
	}
	var req struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal([]byte(cmd), &req); err != nil {
		return "", libvirt.Error{Code: libvirt.ERR_INVALID_ARG, Message: err.Error()}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = map[string]map[string]fakeFile{}
		f.execs = map[int]fakeExec{}
		f.Activations = map[string]int{}
	}
	if f.files[name] == nil {
		f.files[name] = map[string]fakeFile{}
	}
	ret, err := f.handle(dom, name, req.Execute, req.Arguments)
	if err != nil {
		return "", libvirt.Error{Code: libvirt.ERR_AGENT_COMMAND_FAILED, Message: err.Error()}
	}
	b, _ := json.Marshal(map[string]any{"return": ret})
	return string(b), nil
}

func (f *FakeGuest) handle(dom *libvirt.Domain, name, execute string, raw json.RawMessage) (any, error) {
	var a struct {
		Path    string   `json:"path"`
		Arg     []string `json:"arg"`
		PID     int      `json:"pid"`
		Input   string   `json:"input-data"`
		Capture bool     `json:"capture-output"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
	}
	fs := f.files[name]
	switch execute {
	case "guest-ping":
		return struct{}{}, nil
	case "guest-exec":
		f.next++
		stdin, err := base64.StdEncoding.DecodeString(a.Input)
		if err != nil {
			return nil, err
		}
		f.execs[f.next] = f.exec(name, fs, a.Path, a.Arg, stdin)
		return map[string]int{"pid": f.next}, nil
	case "guest-exec-status":
		e, ok := f.execs[a.PID]
		if !ok {
			return nil, fmt.Errorf("no pid %d", a.PID)
		}
		delete(f.execs, a.PID)
		return map[string]any{"exited": true, "exitcode": e.code,
			"out-data": base64.StdEncoding.EncodeToString(e.out),
			"err-data": base64.StdEncoding.EncodeToString(e.err)}, nil
	case "guest-network-get-interfaces":
		m, ok, err := readMeta(dom, true)
		if err != nil || !ok {
			return []any{}, err
		}
		return []map[string]any{{
			"name": "enp0s3", "hardware-address": m.MAC,
			"ip-addresses": []map[string]any{{"ip-address-type": "ipv4", "ip-address": m.IP, "prefix": 24}},
		}}, nil
	}
	return nil, fmt.Errorf("fake guest: command %s not supported", execute)
}

func (f *FakeGuest) exec(name string, fs map[string]fakeFile, path string, args []string, stdin []byte) fakeExec {
	switch filepath.Base(path) {
	case "cat":
		if len(args) > 0 && args[0] == "--" {
			args = args[1:]
		}
		var out []byte
		for _, p := range args {
			ff, ok := fs[p]
			if !ok {
				return fakeExec{code: 1, err: []byte("cat: " + p + ": No such file or directory\n")}
			}
			out = append(out, ff.Content...)
		}
		return fakeExec{out: out}
	case "sh": // installScript: sh -c SCRIPT airlock-install [then...] < records
		if len(args) < 3 || args[0] != "-c" || args[1] != installScript {
			return fakeExec{code: 2, err: []byte("fake guest: unknown script\n")}
		}
		if bad := fakeInstall(fs, stdin); bad != nil {
			return *bad
		}
		if len(args) > 3 {
			return f.exec(name, fs, args[3], args[4:], nil)
		}
		return fakeExec{}
	case "systemctl":
		return fakeExec{out: []byte("running\n")}
	case filepath.Base(ActivatePath): // airlock-activate [--clock T] [--mac M] < records
		for i := 0; i < len(args); i += 2 {
			if i+1 >= len(args) || (args[i] != "--clock" && args[i] != "--mac") {
				return fakeExec{code: 2, err: []byte("airlock-activate: usage\n")}
			}
		}
		if bad := fakeInstall(fs, stdin); bad != nil {
			return *bad
		}
		delete(fs, EntropyPath) // mixed into the pool, never written
		f.Activations[name]++
		return fakeExec{}
	case "sync", "true", "date":
		return fakeExec{}
	}
	return fakeExec{code: 127, err: []byte(path + ": " + os.ErrNotExist.Error() + "\n")}
}

// fakeInstall writes the "MODE LEN PATH\n" + content records the install
// script and the activation helper read; nil means all went in.
func fakeInstall(fs map[string]fakeFile, stdin []byte) *fakeExec {
	for len(stdin) > 0 {
		nl := bytes.IndexByte(stdin, '\n')
		bad := &fakeExec{code: 2, err: []byte("airlock-install: bad record\n")}
		if nl < 0 {
			return bad
		}
		rec := strings.SplitN(string(stdin[:nl]), " ", 3)
		if len(rec) != 3 || !strings.HasPrefix(rec[2], "/") {
			return bad
		}
		mode, err1 := strconv.ParseUint(rec[0], 8, 32)
		n, err2 := strconv.Atoi(rec[1])
		if err1 != nil || err2 != nil || n < 0 || n > len(stdin)-nl-1 {
			return bad
		}
		fs[rec[2]] = fakeFile{Mode: uint32(mode), Content: append([]byte(nil), stdin[nl+1:nl+1+n]...)}
		stdin = stdin[nl+1+n:]
	}
	return nil
}
