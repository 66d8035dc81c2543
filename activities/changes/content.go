package changes

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// TextDiffLimit is the largest file that gets a unified diff.
const TextDiffLimit = 256 << 10

// needsContent: regular files whose final bytes the playbook must carry.
func needsContent(f FileChange) bool {
	return f.Action != Removed && f.After.Type == TypeFile && f.After.SHA256 != "" &&
		(f.Action == Added || f.Content || f.Type)
}

// ContentRequests lists the guest paths whose final contents the caller
// fetches from the agent's sandbox (after the final manifest) and passes to
// AttachContents and to the playbook generator: every added or rewritten
// regular file that was hashed. Files too large to hash are not requested;
// the generator flags them.
func ContentRequests(c *Changes) []string {
	var out []string
	for _, f := range c.Files {
		if needsContent(f) {
			out = append(out, string(f.Path))
		}
	}
	return out
}

// BaselineContentRequests lists the paths whose original contents are needed
// for unified diffs: modified regular files up to TextDiffLimit. The agent's
// sandbox no longer has them; fetch them from the baseline snapshot or from
// a fresh clone of the same source (the verification clone, before the
// playbook is applied).
func BaselineContentRequests(c *Changes) []string {
	var out []string
	for _, f := range c.Files {
		if f.Action == Modified && f.Content && !f.Type && f.Before.Type == TypeFile &&
			f.Before.Size <= TextDiffLimit && f.After.Size <= TextDiffLimit {
			out = append(out, string(f.Path))
		}
	}
	return out
}

// AttachContents fills Binary, Diff and DiffOmitted of the file changes.
// before and after map guest paths to bytes; each must match the hash in the
// manifest, or the file changed since the manifest was taken (an error).
// Missing entries only leave the diff out.
func AttachContents(c *Changes, before, after map[string][]byte) error {
	for i := range c.Files {
		f := &c.Files[i]
		if f.Action == Removed || f.After.Type != TypeFile || !(f.Action == Added || f.Content || f.Type) {
			continue
		}
		a, ok := after[string(f.Path)]
		if !ok {
			f.DiffOmitted = "content not fetched"
			continue
		}
		if err := checkSHA(f.Path, a, f.After.SHA256); err != nil {
			return fmt.Errorf("after: %w", err)
		}
		if bytes.IndexByte(a, 0) >= 0 {
			f.Binary, f.DiffOmitted = true, "binary"
			continue
		}
		if len(a) > TextDiffLimit {
			f.DiffOmitted = fmt.Sprintf("larger than %d KiB", TextDiffLimit>>10)
			continue
		}
		name := string(f.Path)
		if f.Action == Added || f.Type {
			f.Diff = UnifiedDiff("/dev/null", "b"+name, "", string(a))
			continue
		}
		b, ok := before[name]
		if !ok {
			f.DiffOmitted = "original content not fetched"
			continue
		}
		if err := checkSHA(f.Path, b, f.Before.SHA256); err != nil {
			return fmt.Errorf("before: %w", err)
		}
		if bytes.IndexByte(b, 0) >= 0 {
			f.Binary, f.DiffOmitted = true, "binary"
			continue
		}
		f.Diff = UnifiedDiff("a"+name, "b"+name, string(b), string(a))
	}
	return nil
}

func checkSHA(p Path, data []byte, want string) error {
	if want == "" {
		return nil
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want {
		return fmt.Errorf("%s: content sha256 %s does not match manifest %s (changed since the manifest?)", p.Display(), got[:12], want[:12])
	}
	return nil
}
