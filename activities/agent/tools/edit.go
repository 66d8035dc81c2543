package tools

import (
	"fmt"
	"strings"
)

// EditFileInput is what the host-side EditFile activity gets: the parsed
// edit_file arguments for one sandbox.
type EditFileInput struct {
	Sandbox string       `json:"sandbox"`
	Edit    EditFileArgs `json:"edit"`
}

// EditFileResult records an edit.
type EditFileResult struct {
	Path    string `json:"path"`
	Created bool   `json:"created"`
	Bytes   int    `json:"bytes"`
	SHA256  string `json:"sha256"`
	Mode    string `json:"mode"`
	Owner   string `json:"owner"`
	Group   string `json:"group"`
	Diff    string `json:"diff,omitempty"` // unified diff, capped
}

// ApplyEdit computes a file's new content. old is the current content and
// exists says whether the file exists. A replace needs old_text exactly
// once; an append to a file without a final newline adds one first.
func ApplyEdit(a EditFileArgs, old string, exists bool) (string, error) {
	switch a.Op {
	case "write":
		return *a.Content, nil
	case "append":
		if exists && old != "" && !strings.HasSuffix(old, "\n") {
			old += "\n"
		}
		return old + *a.Content, nil
	case "replace":
		if !exists {
			return "", fmt.Errorf("%s does not exist; use op \"write\" to create it", a.Path)
		}
		switch n := strings.Count(old, a.OldText); n {
		case 0:
			hint := ""
			if strings.Contains(old, strings.TrimSpace(a.OldText)) {
				hint = " (it does occur with different surrounding whitespace; copy it exactly from read_file)"
			}
			return "", fmt.Errorf("old_text was not found in %s%s; read the file and copy the text exactly", a.Path, hint)
		case 1:
			return strings.Replace(old, a.OldText, *a.NewText, 1), nil
		default:
			return "", fmt.Errorf("old_text occurs %d times in %s; include more surrounding lines so it is unique", n, a.Path)
		}
	}
	return "", fmt.Errorf("unknown op %q", a.Op)
}
