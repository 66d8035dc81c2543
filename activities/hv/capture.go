package hv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// BaselineTrees are saved (as a tar on the host) when the baseline
// manifest is taken, so that unified diffs of modified configuration show
// the original text. Files elsewhere are still classified and hashed; they
// only lack a unified diff.
var BaselineTrees = []string{"etc", "usr/local", "opt", "srv", "var/www", "root", "home", "var/spool/cron"}

// Limits on what is copied out of a sandbox.
const (
	maxBaselineTar = 64 << 20
	maxContentTar  = 128 << 20
)

// TakeManifest records the sandbox's state: files, packages, services,
// users, cron and sysctl. With a baseline, only files whose inode, size,
// mtime or ctime changed are hashed again.
func (a *Activities) TakeManifest(ctx context.Context, in sandbox.ManifestInput) (sandbox.ManifestResult, error) {
	start := time.Now()
	stop := heartbeat(ctx, "manifest of "+in.Sandbox)
	defer stop()
	var base *changes.Manifest
	opts := changes.ScriptOptions{}
	if in.BaselineRef != "" {
		var err error
		if base, err = a.loadManifest(ctx, in.BaselineRef); err != nil {
			return sandbox.ManifestResult{}, err
		}
		if err := a.upload(ctx, in.Sandbox, changes.BaselineIndexPath, base.BaselineIndex()); err != nil {
			return sandbox.ManifestResult{}, err
		}
		opts.BaselineIndex = changes.BaselineIndexPath
	}
	var img imageIndex
	if in.BaselineRef == "" {
		var err error
		if img, base, err = a.prepareImageIndex(ctx, in.Sandbox, &opts); err != nil {
			return sandbox.ManifestResult{}, err
		}
	}
	out, done, err := tempFile("airlock-manifest-")
	if err != nil {
		return sandbox.ManifestResult{}, fmt.Errorf("manifest: %w", err)
	}
	defer done()
	if err := a.runScript(ctx, in.Sandbox, changes.ManifestScript(opts), 15*time.Minute, out); err != nil {
		return sandbox.ManifestResult{}, fmt.Errorf("manifest: %w", err)
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return sandbox.ManifestResult{}, err
	}
	m, err := changes.ParseManifest(out)
	if err != nil {
		return sandbox.ManifestResult{}, fmt.Errorf("parse manifest of %s: %w", in.Sandbox, err)
	}
	m.Inherit(base)
	if in.BaselineRef == "" {
		a.storeImageBaseline(img, m)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return sandbox.ManifestResult{}, fmt.Errorf("encode manifest: %w", err)
	}
	ref, err := a.Artifacts.PutArtifact(ctx, "manifest", bytes.NewReader(raw))
	if err != nil {
		return sandbox.ManifestResult{}, fmt.Errorf("store manifest: %w", err)
	}
	res := sandbox.ManifestResult{Ref: ref.ID, Entries: len(m.Files), Hashed: m.Stats.Hashed}
	if in.BaselineRef == "" {
		if res.FilesRef, err = a.saveTrees(ctx, in.Sandbox); err != nil {
			return res, err
		}
	}
	res.Ms = time.Since(start).Milliseconds()
	return res, nil
}

// CaptureChanges diffs two manifests, fetches the contents the diff and
// the playbook need, and stores the capture. History gets counts and a
// short text.
func (a *Activities) CaptureChanges(ctx context.Context, in sandbox.CaptureInput) (sandbox.CaptureResult, error) {
	stop := heartbeat(ctx, "capture "+in.Sandbox)
	defer stop()
	before, err := a.loadManifest(ctx, in.BeforeRef)
	if err != nil {
		return sandbox.CaptureResult{}, err
	}
	after, err := a.loadManifest(ctx, in.AfterRef)
	if err != nil {
		return sandbox.CaptureResult{}, err
	}
	c := changes.Diff(before, after, changes.DiffOptions{})
	afterContents, err := a.fetchFiles(ctx, in.Sandbox, changes.ContentRequests(c))
	if err != nil {
		return sandbox.CaptureResult{}, err
	}
	beforeContents := map[string][]byte{}
	if in.BeforeFilesRef != "" {
		if beforeContents, err = a.filesFromTrees(ctx, in.BeforeFilesRef, changes.BaselineContentRequests(c)); err != nil {
			return sandbox.CaptureResult{}, err
		}
	}
	if err := changes.AttachContents(c, beforeContents, afterContents); err != nil {
		return sandbox.CaptureResult{}, fmt.Errorf("attach contents: %w", err)
	}
	raw, err := json.Marshal(changes.Capture{Changes: c, Contents: afterContents})
	if err != nil {
		return sandbox.CaptureResult{}, fmt.Errorf("encode capture: %w", err)
	}
	ref, err := a.Artifacts.PutArtifact(ctx, "changes", bytes.NewReader(raw))
	if err != nil {
		return sandbox.CaptureResult{}, fmt.Errorf("store capture: %w", err)
	}
	var text strings.Builder
	if err := changes.Format(&text, c); err != nil {
		return sandbox.CaptureResult{}, err
	}
	return sandbox.CaptureResult{ChangesRef: ref.ID, Summary: c.Summary().Map(), Text: capString(Clean(text.String()), 8192)}, nil
}

func (a *Activities) loadManifest(ctx context.Context, ref string) (*changes.Manifest, error) {
	raw, err := a.Artifacts.ReadArtifact(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("load manifest %s: %w", ref, err)
	}
	var m changes.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, nonRetryable(fmt.Errorf("%w: manifest %s: %v", sandbox.ErrBadInput, ref, err))
	}
	return &m, nil
}

// upload writes one of Airlock's own files into the guest (e.g. the
// baseline index under /var/lib/airlock-agent). The bytes go over the
// session's stdin to `cat`: inside a script, bash reads its input one
// byte per read(2), which made a 1.7 MB index take 90 s under TCG.
func (a *Activities) upload(ctx context.Context, name, path string, content []byte) error {
	c, err := a.client(ctx, name)
	if err != nil {
		return err
	}
	if err := c.WriteFile(ctx, path, content, 0o600, "", ""); err != nil {
		return fmt.Errorf("upload %s: %w", path, err)
	}
	return nil
}

// saveTrees stores a gzipped tar of BaselineTrees as they are now.
func (a *Activities) saveTrees(ctx context.Context, name string) (string, error) {
	script := "cd / && tar --ignore-failed-read --warning=no-file-changed -czf - " +
		"--exclude=etc/ssh/airlock --exclude=etc/shadow --exclude=etc/gshadow " + existing(BaselineTrees) + " 2>/dev/null; rc=$?; [ $rc -le 1 ]"
	var buf bytes.Buffer
	if err := a.runScript(ctx, name, script, 5*time.Minute, &capWriter{buf: &buf, max: maxBaselineTar}); err != nil {
		return "", fmt.Errorf("save baseline trees: %w", err)
	}
	ref, err := a.Artifacts.PutArtifact(ctx, "baseline-files", &buf)
	if err != nil {
		return "", fmt.Errorf("store baseline trees: %w", err)
	}
	return ref.ID, nil
}

func existing(dirs []string) string {
	var b strings.Builder
	b.WriteString("$(for d in")
	for _, d := range dirs {
		b.WriteString(" " + d)
	}
	b.WriteString("; do [ -e \"$d\" ] && printf '%s ' \"$d\"; done)")
	return b.String()
}

// fetchFiles copies the named regular files out of the sandbox as a tar.
func (a *Activities) fetchFiles(ctx context.Context, name string, paths []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	if len(paths) == 0 {
		return out, nil
	}
	var list bytes.Buffer
	for _, p := range paths {
		list.WriteString(strings.TrimPrefix(p, "/"))
		list.WriteByte(0)
	}
	script := fmt.Sprintf("cd / && base64 -d <<'AIRLOCK_EOF' | tar --null --no-recursion -T - -cf -\n%s\nAIRLOCK_EOF\n", base64.StdEncoding.EncodeToString(list.Bytes()))
	var buf bytes.Buffer
	if err := a.runScript(ctx, name, script, 5*time.Minute, &capWriter{buf: &buf, max: maxContentTar}); err != nil {
		return nil, fmt.Errorf("fetch %d files: %w", len(paths), err)
	}
	return readTar(tar.NewReader(&buf), nil)
}

// filesFromTrees extracts wanted paths from the stored baseline tar.
func (a *Activities) filesFromTrees(ctx context.Context, ref string, wanted []string) (map[string][]byte, error) {
	if len(wanted) == 0 {
		return map[string][]byte{}, nil
	}
	raw, err := a.Artifacts.ReadArtifact(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("load baseline trees: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("baseline trees: %w", err)
	}
	want := map[string]bool{}
	for _, p := range wanted {
		want[p] = true
	}
	return readTar(tar.NewReader(zr), want)
}

// readTar returns regular files keyed by absolute path; want filters.
func readTar(tr *tar.Reader, want map[string]bool) (map[string][]byte, error) {
	out := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		p := "/" + strings.TrimPrefix(hdr.Name, "./")
		if want != nil && !want[p] {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("read tar %s: %w", p, err)
		}
		out[p] = b
	}
}

// capWriter refuses output beyond max instead of growing without bound.
type capWriter struct {
	buf *bytes.Buffer
	max int
}

var errTooMuchOutput = errors.New("output exceeds the copy limit")

func (w *capWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.max {
		return 0, errTooMuchOutput
	}
	return w.buf.Write(p)
}
