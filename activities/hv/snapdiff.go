package hv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/store/audit"
)

// Now names the sandbox's current state in SnapshotDiffInput.To.
const Now = "now"

// SnapshotDiffInput asks for the classified diff between two points of a
// running sandbox: From is a snapshot, To a snapshot or Now.
type SnapshotDiffInput struct {
	Sandbox string `json:"sandbox"`
	From    string `json:"from"`
	To      string `json:"to"`
}

// SnapshotDiffResult references the stored capture; Text is capped.
type SnapshotDiffResult struct {
	ChangesRef string         `json:"changes_ref"`
	Summary    map[string]int `json:"summary"`
	Text       string         `json:"text"`
	Ms         int64          `json:"ms"`
}

// DiffSnapshots takes a manifest at each point and diffs them. It moves
// the sandbox: it saves the current state in a temporary snapshot,
// reverts to From (manifest and a copy of the configuration trees, for
// unified diffs), reverts to To (or back to the current state for Now),
// takes the second manifest with the first as its index, and finally
// reverts to the saved state and deletes the temporary snapshot. So the
// sandbox ends where it was, but its clock jumps and SSH connections are
// re-dialled: do not run it while a task is using the sandbox. Snapshots
// must be ones CreateSnapshot made (with memory, on the running sandbox).
// A snapshot that does not exist is an ErrSnapshotAbsent error that names
// the snapshots the sandbox has, before anything is touched.
func (a *Activities) DiffSnapshots(ctx context.Context, in SnapshotDiffInput) (SnapshotDiffResult, error) {
	c, contents, ms, err := a.diffSnapshots(ctx, in)
	if err != nil {
		return SnapshotDiffResult{}, nonRetryable(err)
	}
	raw, err := json.Marshal(changes.Capture{Changes: c, Contents: contents})
	if err != nil {
		return SnapshotDiffResult{}, fmt.Errorf("encode snapshot diff: %w", err)
	}
	ref, err := a.Artifacts.PutArtifact(ctx, "changes", bytes.NewReader(raw))
	if err != nil {
		return SnapshotDiffResult{}, fmt.Errorf("store snapshot diff: %w", err)
	}
	var text strings.Builder
	if err := changes.Format(&text, c); err != nil {
		return SnapshotDiffResult{}, fmt.Errorf("format snapshot diff: %w", err)
	}
	return SnapshotDiffResult{ChangesRef: ref.ID, Summary: c.Summary().Map(), Text: capString(Clean(text.String()), 64<<10), Ms: ms}, nil
}

// SnapshotChanges is DiffSnapshots without storing anything: the
// classified changes (unified diffs attached) for the CLI. (A function,
// not a method, so that it is not registered as an activity.)
func SnapshotChanges(ctx context.Context, a *Activities, in SnapshotDiffInput) (*changes.Changes, error) {
	c, _, _, err := a.diffSnapshots(ctx, in)
	return c, err
}

func (a *Activities) diffSnapshots(ctx context.Context, in SnapshotDiffInput) (c *changes.Changes, after map[string][]byte, ms int64, err error) {
	start := time.Now()
	if in.To == "" {
		in.To = Now
	}
	if !strings.HasPrefix(in.Sandbox, sandbox.NamePrefix) {
		return nil, nil, 0, fmt.Errorf("%w: %q is not a sandbox name", sandbox.ErrBadInput, in.Sandbox)
	}
	if in.From == "" || in.From == Now {
		return nil, nil, 0, fmt.Errorf("%w: from must name a snapshot", sandbox.ErrBadInput)
	}
	if err := a.requireSnapshots(ctx, in.Sandbox, in.From, in.To); err != nil {
		return nil, nil, 0, err
	}
	stop := heartbeat(ctx, "snapshot diff of "+in.Sandbox)
	defer stop()

	tmp := "airlock-diff-" + randomHex(4)
	if _, err := a.HV.CreateSnapshot(ctx, in.Sandbox, tmp); err != nil {
		return nil, nil, 0, fmt.Errorf("save current state: %w", err)
	}
	back := false // already at the saved state
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		var derr error
		if !back {
			derr = a.revert(dctx, in.Sandbox, tmp)
		}
		if derr == nil {
			derr = a.HV.DeleteSnapshot(dctx, in.Sandbox, tmp)
		}
		if derr != nil && err == nil {
			err = fmt.Errorf("return %s to its state before the diff (snapshot %s): %w", in.Sandbox, tmp, derr)
		}
	}()

	if err := a.revert(ctx, in.Sandbox, in.From); err != nil {
		return nil, nil, 0, fmt.Errorf("revert to %s: %w", in.From, err)
	}
	fromM, err := a.plainManifest(ctx, in.Sandbox, nil)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("manifest at %s: %w", in.From, err)
	}
	trees, err := a.treesTar(ctx, in.Sandbox)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("configuration at %s: %w", in.From, err)
	}
	to := in.To
	if to == Now {
		to = tmp
	}
	if err := a.revert(ctx, in.Sandbox, to); err != nil {
		return nil, nil, 0, fmt.Errorf("revert to %s: %w", in.To, err)
	}
	back = to == tmp
	toM, err := a.plainManifest(ctx, in.Sandbox, fromM)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("manifest at %s: %w", in.To, err)
	}
	c = changes.Diff(fromM, toM, changes.DiffOptions{})
	if after, err = a.fetchFiles(ctx, in.Sandbox, changes.ContentRequests(c)); err != nil {
		return nil, nil, 0, err
	}
	before, err := readTar(tar.NewReader(trees), wanted(changes.BaselineContentRequests(c)))
	if err != nil {
		return nil, nil, 0, err
	}
	if err := changes.AttachContents(c, before, after); err != nil {
		return nil, nil, 0, fmt.Errorf("attach contents: %w", err)
	}
	return c, after, time.Since(start).Milliseconds(), nil
}

// requireSnapshots fails with ErrSnapshotAbsent, naming what the sandbox
// has, if any of names (other than Now) is not a snapshot of it.
func (a *Activities) requireSnapshots(ctx context.Context, name string, names ...string) error {
	snaps, err := a.HV.ListSnapshots(ctx, name)
	if err != nil {
		return fmt.Errorf("snapshots of %s: %w", name, err)
	}
	have := map[string]bool{}
	var list []string
	for _, s := range snaps {
		have[s.Name] = true
		list = append(list, s.Name)
	}
	sort.Strings(list)
	for _, n := range names {
		if n == Now || have[n] {
			continue
		}
		has := "it has no snapshots"
		if len(list) > 0 {
			has = "it has: " + strings.Join(list, ", ")
		}
		return fmt.Errorf("%w: sandbox %s has no snapshot %q (%s)", sandbox.ErrSnapshotAbsent, name, n, has)
	}
	return nil
}

// revert is RestoreSnapshot with plain errors: drop the SSH connection,
// revert, and wait until sshd answers again.
func (a *Activities) revert(ctx context.Context, name, snapshot string) error {
	a.Pool.Drop(name)
	if err := a.HV.RestoreSnapshot(ctx, name, snapshot); err != nil {
		return err
	}
	ip, err := a.ip(ctx, name)
	if err != nil {
		return err
	}
	return a.waitSSH(ctx, name, ip)
}

// plainManifest takes a manifest without storing it. The index is base's
// (if given) or the sandbox lineage's image baseline; the image cache is
// read, never written (the sandbox may hold an agent's changes).
func (a *Activities) plainManifest(ctx context.Context, name string, base *changes.Manifest) (*changes.Manifest, error) {
	opts := changes.ScriptOptions{}
	inherit := base
	if base != nil {
		if err := a.upload(ctx, name, changes.BaselineIndexPath, base.BaselineIndex()); err != nil {
			return nil, err
		}
		opts.BaselineIndex = changes.BaselineIndexPath
	} else {
		var err error
		if _, inherit, err = a.prepareImageIndex(ctx, name, &opts); err != nil {
			return nil, err
		}
	}
	var out bytes.Buffer
	if err := a.runScript(ctx, name, changes.ManifestScript(opts), 15*time.Minute, &out); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m, err := changes.ParseManifest(&out)
	if err != nil {
		return nil, fmt.Errorf("parse manifest of %s: %w", name, err)
	}
	m.Inherit(inherit)
	return m, nil
}

// treesTar returns a tar reader over BaselineTrees as they are now.
func (a *Activities) treesTar(ctx context.Context, name string) (io.Reader, error) {
	script := "cd / && tar --ignore-failed-read --warning=no-file-changed -czf - " +
		"--exclude=etc/ssh/airlock --exclude=etc/shadow --exclude=etc/gshadow " + existing(BaselineTrees) + " 2>/dev/null; rc=$?; [ $rc -le 1 ]"
	var buf bytes.Buffer
	if err := a.runScript(ctx, name, script, 5*time.Minute, &capWriter{buf: &buf, max: maxBaselineTar}); err != nil {
		return nil, fmt.Errorf("copy configuration trees: %w", err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		return nil, fmt.Errorf("configuration trees: %w", err)
	}
	return zr, nil
}

func wanted(paths []string) map[string]bool {
	w := map[string]bool{}
	for _, p := range paths {
		w[p] = true
	}
	return w
}

// MemArtifacts is an in-process artifact store for tools that run the
// host activities without the audit store (the CLI's sandbox diff, the
// benchmarks). Content-addressed like the real one.
type MemArtifacts struct {
	mu sync.Mutex
	m  map[string][]byte
}

// PutArtifact stores r's bytes under their sha256.
func (s *MemArtifacts) PutArtifact(_ context.Context, _ string, r io.Reader) (audit.ArtifactRef, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return audit.ArtifactRef{}, fmt.Errorf("put artifact: %w", err)
	}
	sum := sha256.Sum256(b)
	id := hex.EncodeToString(sum[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[id] = b
	return audit.ArtifactRef{ID: id, SHA256: id, Size: int64(len(b))}, nil
}

// ReadArtifact returns the bytes stored under id.
func (s *MemArtifacts) ReadArtifact(_ context.Context, id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[id]
	if !ok {
		return nil, fmt.Errorf("artifact %s not found", id)
	}
	return b, nil
}
