// Package agent holds Airlock's agents. The runbook agent is scripted YAML
// that drives the same tool layer as the LLM agent; this file loads and
// validates runbooks and task files with precise error positions.
package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/airlock-dev/airlock/workflows"
)

// PositionError names the file, line, column and field of a bad input.
type PositionError struct {
	File   string
	Line   int
	Column int
	Field  string
	Msg    string
}

func (e *PositionError) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Column, e.Field, e.Msg)
}

// Runbook is a runbook file: optional metadata plus steps.
type Runbook struct {
	Goal  string                  `yaml:"goal,omitempty"`
	Steps []workflows.RunbookStep `yaml:"steps"`
}

// LoadRunbook reads and validates a runbook file.
func LoadRunbook(path string) (Runbook, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Runbook{}, fmt.Errorf("read runbook: %w", err)
	}
	return ParseRunbook(path, b)
}

// ParseRunbook decodes strictly and validates every step, reporting the
// position of the first problem.
func ParseRunbook(name string, b []byte) (Runbook, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return Runbook{}, yamlError(name, err)
	}
	var rb Runbook
	if err := decodeStrict(b, &rb); err != nil {
		return Runbook{}, yamlError(name, err)
	}
	if len(rb.Steps) == 0 {
		return Runbook{}, &PositionError{File: name, Line: 1, Column: 1, Field: "steps", Msg: "a runbook needs at least one step"}
	}
	spec := workflows.AgentSpec{Mode: "runbook", Steps: rb.Steps}
	if err := spec.Validate(); err != nil {
		return Runbook{}, positionOf(name, &root, err, "agent.")
	}
	return rb, nil
}

// LoadTask reads a task file (YAML or JSON, strictly) and validates its
// structure. Catalog checks (images, targets) happen in the workflow.
func LoadTask(path string) (workflows.TaskInput, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return workflows.TaskInput{}, fmt.Errorf("read task: %w", err)
	}
	return ParseTask(path, b)
}

// ParseTask decodes a task file strictly and validates it.
func ParseTask(name string, b []byte) (workflows.TaskInput, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return workflows.TaskInput{}, yamlError(name, err)
	}
	var in workflows.TaskInput
	if err := decodeStrict(b, &in); err != nil {
		return workflows.TaskInput{}, yamlError(name, err)
	}
	in.Normalize()
	if err := in.Validate(workflows.Catalog{}); err != nil {
		return workflows.TaskInput{}, positionOf(name, &root, err, "")
	}
	return in, nil
}

func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

var yamlLineRe = regexp.MustCompile(`line (\d+): (.*)`)

// yamlError turns yaml.v3's "line N: field x not found" into a position.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		field := "(document)"
		if f := regexp.MustCompile(`field (\S+) not found`).FindStringSubmatch(m[2]); f != nil {
			field = f[1]
		}
		return &PositionError{File: name, Line: line, Column: 1, Field: field, Msg: m[2]}
	}
	return &PositionError{File: name, Line: 1, Column: 1, Field: "(document)", Msg: msg}
}

// positionOf finds the node named by an InputError's field path (such as
// "agent.steps[2]") in the YAML tree and reports its line and column.
func positionOf(name string, root *yaml.Node, err error, strip string) error {
	var ie *workflows.InputError
	if !errors.As(err, &ie) {
		return &PositionError{File: name, Line: 1, Column: 1, Field: "(document)", Msg: err.Error()}
	}
	path := strings.TrimPrefix(ie.Field, strip)
	node := root
	if node.Kind == yaml.DocumentNode && len(node.Content) > 0 {
		node = node.Content[0]
	}
	for _, part := range strings.Split(path, ".") {
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			key = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		next := child(node, key)
		if next == nil {
			break
		}
		node = next
		if idx >= 0 && node.Kind == yaml.SequenceNode && idx < len(node.Content) {
			node = node.Content[idx]
		}
	}
	return &PositionError{File: name, Line: node.Line, Column: node.Column, Field: ie.Field, Msg: ie.Msg}
}

func child(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
