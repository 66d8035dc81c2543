package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Argument types, one per tool that takes arguments. Field names are the
// JSON schema's.
type (
	SandboxArgs struct {
		Sandbox string `json:"sandbox,omitempty"`
	}
	RunCommandArgs struct {
		Command        string `json:"command"`
		TimeoutSeconds int    `json:"timeout_seconds,omitempty"`
		Sandbox        string `json:"sandbox,omitempty"`
	}
	ReadFileArgs struct {
		Path     string `json:"path"`
		MaxBytes int    `json:"max_bytes,omitempty"`
		Sandbox  string `json:"sandbox,omitempty"`
	}
	EditFileArgs struct {
		Path    string  `json:"path" yaml:"path,omitempty"`
		Op      string  `json:"op" yaml:"op,omitempty"` // replace | append | write
		OldText string  `json:"old_text,omitempty" yaml:"old_text,omitempty"`
		NewText *string `json:"new_text,omitempty" yaml:"new_text,omitempty"`
		Content *string `json:"content,omitempty" yaml:"content,omitempty"`
		Owner   string  `json:"owner,omitempty" yaml:"owner,omitempty"`
		Group   string  `json:"group,omitempty" yaml:"group,omitempty"`
		Mode    string  `json:"mode,omitempty" yaml:"mode,omitempty"`
		Sandbox string  `json:"sandbox,omitempty" yaml:"sandbox,omitempty"`
	}
	SnapshotArgs struct {
		Name    string `json:"name"`
		Sandbox string `json:"sandbox,omitempty"`
	}
	DiffArgs struct {
		SinceSnapshot string `json:"since_snapshot,omitempty"`
	}
	CreatePlaybookArgs struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
	}
	AddPlaybookTaskArgs struct {
		Playbook string          `json:"playbook"`
		Name     string          `json:"name"`
		Module   string          `json:"module"`
		Args     json.RawMessage `json:"args,omitempty"`
		Notes    string          `json:"notes,omitempty"`
	}
	NameArgs struct {
		Name string `json:"name"`
	}
	RequestApprovalArgs struct {
		Question string   `json:"question"`
		Options  []string `json:"options,omitempty"`
	}
	RequestEgressArgs struct {
		Reason       string   `json:"reason" yaml:"reason,omitempty"`
		Destinations []string `json:"destinations" yaml:"destinations,omitempty"`
		Minutes      int      `json:"minutes,omitempty" yaml:"minutes,omitempty"`
		Sandbox      string   `json:"sandbox,omitempty" yaml:"sandbox,omitempty"`
	}
	FinishArgs struct {
		Summary string `json:"summary"`
	}
	NoArgs struct{}
)

// ArgError is a bad tool call, worded for the model that made it.
type ArgError struct {
	Tool string
	Msg  string
}

func (e *ArgError) Error() string { return e.Tool + ": " + e.Msg }

// ErrUnknownTool marks a call of a tool that does not exist or is not
// offered.
var ErrUnknownTool = errors.New("unknown tool")

var (
	snapNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$`)
	modeRe     = regexp.MustCompile(`^0?[0-7]{3,4}$`)
	userRe     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}\$?$`)
)

// Limits on argument sizes, so a runaway model cannot fill history.
const (
	MaxCommandBytes = 64 << 10
	MaxContentBytes = 256 << 10
	MaxTextBytes    = 8 << 10
)

// Parse decodes a tool call's arguments strictly (unknown fields, wrong
// types and missing required fields are errors) and checks their values.
// It returns a pointer to the tool's argument struct.
func Parse(name, raw string) (any, error) {
	if _, ok := byName[name]; !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownTool, name)
	}
	raw = strings.TrimSpace(raw)
	if raw == "" || raw == "null" {
		raw = "{}"
	}
	bad := func(format string, a ...any) error { return &ArgError{Tool: name, Msg: fmt.Sprintf(format, a...)} }
	var v any
	switch name {
	case ListSandboxes, CreateSandbox, ListPlaybooks:
		v = &NoArgs{}
	case DestroySandbox, StartSandbox, StopSandbox:
		v = &SandboxArgs{}
	case RunCommand:
		v = &RunCommandArgs{}
	case ReadFile:
		v = &ReadFileArgs{}
	case EditFile:
		v = &EditFileArgs{}
	case CreateSnapshot, RestoreSnapshot:
		v = &SnapshotArgs{}
	case Diff:
		v = &DiffArgs{}
	case CreatePlaybook:
		v = &CreatePlaybookArgs{}
	case AddPlaybookTask:
		v = &AddPlaybookTaskArgs{}
	case GetPlaybook:
		v = &NameArgs{}
	case RequestApproval:
		v = &RequestApprovalArgs{}
	case RequestEgress:
		v = &RequestEgressArgs{}
	case Finish:
		v = &FinishArgs{}
	}
	if !json.Valid([]byte(raw)) {
		return nil, bad("arguments are not valid JSON (%s); send a JSON object matching the tool's schema", clip(raw, 80))
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return nil, bad("argument %q must be a %s, got %s", ute.Field, jsonType(ute.Type.Kind().String()), ute.Value)
		}
		return nil, bad("arguments do not match the schema: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if err := check(name, v); err != nil {
		return nil, bad("%s", err.Error())
	}
	return v, nil
}

func check(name string, v any) error {
	switch a := v.(type) {
	case *SandboxArgs:
		if name == DestroySandbox && a.Sandbox == "" {
			return errors.New(`"sandbox" is required`)
		}
	case *RunCommandArgs:
		switch {
		case strings.TrimSpace(a.Command) == "":
			return errors.New(`"command" is required and must not be empty`)
		case len(a.Command) > MaxCommandBytes:
			return fmt.Errorf(`"command" is longer than %d bytes; write a script with edit_file and run it`, MaxCommandBytes)
		case a.TimeoutSeconds < 0 || a.TimeoutSeconds > 3600:
			return errors.New(`"timeout_seconds" must be between 1 and 3600`)
		}
	case *ReadFileArgs:
		if err := absPath(a.Path); err != nil {
			return err
		}
		if a.MaxBytes < 0 || a.MaxBytes > 65536 {
			return errors.New(`"max_bytes" must be between 1 and 65536`)
		}
	case *EditFileArgs:
		return checkEdit(a)
	case *SnapshotArgs:
		if !snapNameRe.MatchString(a.Name) {
			return fmt.Errorf(`"name" %q must match %s`, a.Name, snapNameRe)
		}
	case *DiffArgs:
		if a.SinceSnapshot != "" && !snapNameRe.MatchString(a.SinceSnapshot) {
			return fmt.Errorf(`"since_snapshot" %q is not a snapshot name`, a.SinceSnapshot)
		}
	case *CreatePlaybookArgs:
		if strings.TrimSpace(a.Name) == "" || len(a.Name) > 100 {
			return errors.New(`"name" is required (at most 100 characters)`)
		}
	case *AddPlaybookTaskArgs:
		if a.Playbook == "" || a.Name == "" || a.Module == "" {
			return errors.New(`"playbook", "name" and "module" are required`)
		}
		if len(a.Args) > MaxTextBytes || len(a.Notes) > MaxTextBytes {
			return fmt.Errorf(`"args" and "notes" must each be under %d bytes`, MaxTextBytes)
		}
		if len(a.Args) > 0 && !bytes.HasPrefix(bytes.TrimSpace(a.Args), []byte("{")) {
			return errors.New(`"args" must be an object`)
		}
	case *NameArgs:
		if a.Name == "" {
			return errors.New(`"name" is required`)
		}
	case *RequestApprovalArgs:
		if strings.TrimSpace(a.Question) == "" || len(a.Question) > MaxTextBytes {
			return errors.New(`"question" is required (at most 8 KiB)`)
		}
		if len(a.Options) == 1 || len(a.Options) > 8 {
			return errors.New(`"options" needs 2 to 8 choices, or none for a yes/no question`)
		}
		for i, o := range a.Options {
			if strings.TrimSpace(o) == "" || len(o) > 200 {
				return fmt.Errorf(`"options[%d]" must be a non-empty string of at most 200 characters`, i)
			}
			for _, p := range a.Options[:i] {
				if p == o {
					return fmt.Errorf(`"options" has %q twice`, o)
				}
			}
		}
	case *RequestEgressArgs:
		if strings.TrimSpace(a.Reason) == "" || len(a.Reason) > MaxTextBytes {
			return errors.New(`"reason" is required: say what you need the network for`)
		}
		if len(a.Destinations) == 0 || len(a.Destinations) > 16 {
			return errors.New(`"destinations" needs 1 to 16 hosts or URLs you will contact`)
		}
		if a.Minutes < 0 || a.Minutes > 120 {
			return errors.New(`"minutes" must be between 1 and 120`)
		}
	case *FinishArgs:
		if strings.TrimSpace(a.Summary) == "" {
			return errors.New(`"summary" is required: say what you did and why`)
		}
		if len(a.Summary) > MaxTextBytes {
			return fmt.Errorf(`"summary" must be under %d bytes`, MaxTextBytes)
		}
	}
	return nil
}

func checkEdit(a *EditFileArgs) error {
	if err := absPath(a.Path); err != nil {
		return err
	}
	if a.Mode != "" && !modeRe.MatchString(a.Mode) {
		return fmt.Errorf(`"mode" must be an octal string like "0644", got %q`, a.Mode)
	}
	for _, u := range []struct{ field, v string }{{"owner", a.Owner}, {"group", a.Group}} {
		if u.v != "" && !userRe.MatchString(u.v) {
			return fmt.Errorf(`%q must be a user or group name, got %q`, u.field, u.v)
		}
	}
	switch a.Op {
	case "replace":
		if a.OldText == "" || a.NewText == nil {
			return errors.New(`op "replace" needs "old_text" (exact text now in the file) and "new_text"`)
		}
		if a.Content != nil {
			return errors.New(`op "replace" takes old_text/new_text, not "content"`)
		}
		if len(a.OldText)+len(*a.NewText) > MaxContentBytes {
			return fmt.Errorf("old_text and new_text together exceed %d bytes", MaxContentBytes)
		}
	case "append", "write":
		if a.Content == nil {
			return fmt.Errorf(`op %q needs "content"`, a.Op)
		}
		if a.OldText != "" || a.NewText != nil {
			return fmt.Errorf(`op %q takes "content", not old_text/new_text`, a.Op)
		}
		if len(*a.Content) > MaxContentBytes {
			return fmt.Errorf(`"content" exceeds %d bytes`, MaxContentBytes)
		}
	default:
		return fmt.Errorf(`"op" must be "replace", "append" or "write", got %q`, a.Op)
	}
	return nil
}

func absPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf(`"path" must be an absolute path, got %q`, p)
	}
	if strings.ContainsRune(p, 0) || len(p) > 4096 {
		return errors.New(`"path" contains a NUL byte or is too long`)
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "int", "int64", "int32", "uint32", "uint64":
		return "integer"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	case "ptr":
		return "string"
	}
	return kind
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// Check validates arguments that were decoded elsewhere (runbook steps
// come from YAML or the task's JSON).
func Check(name string, v any) error {
	if err := check(name, v); err != nil {
		return &ArgError{Tool: name, Msg: err.Error()}
	}
	return nil
}
