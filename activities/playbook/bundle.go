package playbook

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Bundle is a playbook plus the files it copies: PlaybookFile and
// FilesDir/<sha256>. PlanHash (hex SHA256 of Canonical) is what approvals
// refer to, written "sha256:<hex>"; Flags are the review notes (also written as comments at the top
// of the playbook, so the hash covers them).
type Bundle struct {
	Files    map[string][]byte `json:"-"`
	PlanHash string            `json:"plan_hash"`
	Flags    []string          `json:"flags,omitempty"`
	Tasks    int               `json:"tasks"`
}

// Canonical is the serialisation the plan hash is taken over: a version
// line, then one line per file, sorted by name: "<sha256> <size> <name>".
// Bundle file names are ASCII (playbook.yml, files/<hex>), so lines are
// unambiguous.
func (b *Bundle) Canonical() []byte {
	names := b.names()
	var sb strings.Builder
	sb.WriteString("airlock-bundle-v1\n")
	for _, n := range names {
		sum := sha256.Sum256(b.Files[n])
		fmt.Fprintf(&sb, "%s %d %s\n", hex.EncodeToString(sum[:]), len(b.Files[n]), n)
	}
	return []byte(sb.String())
}

func (b *Bundle) names() []string {
	names := make([]string, 0, len(b.Files))
	for n := range b.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (b *Bundle) hash() string {
	sum := sha256.Sum256(b.Canonical())
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Playbook returns the playbook text.
func (b *Bundle) Playbook() []byte { return b.Files[PlaybookFile] }

// WriteDir writes the bundle under dir (created if needed).
func (b *Bundle) WriteDir(dir string) error {
	for _, n := range b.names() {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
		if err := os.WriteFile(p, b.Files[n], 0o644); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
	}
	return nil
}

// WriteTar writes the bundle as a deterministic tar stream (sorted names,
// zero times, root-owned, 0644), so the same bundle is the same bytes.
func (b *Bundle) WriteTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, n := range b.names() {
		if d, _, ok := strings.Cut(n, "/"); ok && !dirs[d] {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755,
				ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}); err != nil {
				return fmt.Errorf("write bundle tar: %w", err)
			}
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b.Files[n])),
			ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write bundle tar: %w", err)
		}
		if _, err := tw.Write(b.Files[n]); err != nil {
			return fmt.Errorf("write bundle tar: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write bundle tar: %w", err)
	}
	return nil
}

// ReadDir loads a bundle from a directory (for example one an approver
// modified) and recomputes its plan hash. Flags and Tasks are not restored.
func ReadDir(dir string) (*Bundle, error) {
	b := &Bundle{Files: map[string][]byte{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b.Files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read bundle %s: %w", dir, err)
	}
	if _, ok := b.Files[PlaybookFile]; !ok {
		return nil, fmt.Errorf("read bundle %s: no %s", dir, PlaybookFile)
	}
	b.PlanHash = b.hash()
	return b, nil
}

// WithPlaybook returns a copy of b whose playbook is replaced (an
// approver's edit), keeping the copied files, with a new plan hash.
func (b *Bundle) WithPlaybook(playbook []byte) *Bundle {
	nb := &Bundle{Files: make(map[string][]byte, len(b.Files)), Flags: b.Flags, Tasks: b.Tasks}
	for k, v := range b.Files {
		nb.Files[k] = v
	}
	nb.Files[PlaybookFile] = playbook
	nb.PlanHash = nb.hash()
	return nb
}
