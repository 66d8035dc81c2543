package playbook

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// MaxBundleBytes bounds a bundle read back from the store.
const MaxBundleBytes = 64 << 20

// ReadTar loads a bundle written by WriteTar and recomputes its plan hash,
// so a caller can check that what it is about to apply is what was
// approved. Only regular files with clean relative names are accepted.
func ReadTar(r io.Reader) (*Bundle, error) {
	b := &Bundle{Files: map[string][]byte{}}
	tr := tar.NewReader(io.LimitReader(r, MaxBundleBytes+1))
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read bundle tar: %w", err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, fmt.Errorf("read bundle tar: %s is not a regular file", hdr.Name)
		}
		name := hdr.Name
		if name != path.Clean(name) || path.IsAbs(name) || strings.HasPrefix(name, "../") || name == ".." {
			return nil, fmt.Errorf("read bundle tar: unsafe name %q", name)
		}
		total += hdr.Size
		if total > MaxBundleBytes {
			return nil, fmt.Errorf("read bundle tar: larger than %d bytes", MaxBundleBytes)
		}
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, tr); err != nil {
			return nil, fmt.Errorf("read bundle tar: %s: %w", name, err)
		}
		b.Files[name] = buf.Bytes()
	}
	if _, ok := b.Files[PlaybookFile]; !ok {
		return nil, fmt.Errorf("read bundle tar: no %s", PlaybookFile)
	}
	b.PlanHash = b.hash()
	return b, nil
}

// FromFiles builds a bundle from in-memory files (an edited
// playbook plus the files of the bundle it came from) and computes its
// plan hash.
func FromFiles(files map[string][]byte) (*Bundle, error) {
	if _, ok := files[PlaybookFile]; !ok {
		return nil, fmt.Errorf("bundle: no %s", PlaybookFile)
	}
	b := &Bundle{Files: make(map[string][]byte, len(files))}
	for k, v := range files {
		if k != path.Clean(k) || path.IsAbs(k) || strings.HasPrefix(k, "../") {
			return nil, fmt.Errorf("bundle: unsafe name %q", k)
		}
		b.Files[k] = v
	}
	b.PlanHash = b.hash()
	return b, nil
}
