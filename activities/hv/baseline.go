package hv

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// ImageBaselines is the per-host cache of "image baseline" manifests: one
// complete manifest (every regular file hashed, every dpkg file list) per
// sandbox lineage, i.e. per golden image hash and boot route (restored
// from the image's fast-start template, or cold-booted from the image).
//
// Clones of one lineage share the inodes, sizes, mtimes and ctimes of
// every file they have not touched, so the cached manifest's
// BaselineIndex lets a fresh sandbox's baseline manifest re-hash only the
// files written since the image or template was made (a few dozen instead
// of ~20,000; under TCG that is seconds instead of a minute).
//
// Correctness does not depend on the key: the manifest script reuses a
// hash only when inode, size, mtime and ctime (ns) all match an index
// record, and ctime cannot be set from user space, so a file rewritten in
// the clone is always hashed again. The key only decides the hit rate. A
// cached manifest that stopped paying off (more than RefreshFraction of
// the files had to be hashed, e.g. after an image rebuild raced a
// sandbox) is replaced by the complete manifest that run produced.
//
// Files live under Dir as <key>.json.gz, written atomically; decoded
// manifests are kept in memory.
type ImageBaselines struct {
	Dir        string // e.g. $STATE/manifests
	ImageCache string // golden images: <ImageCache>/<image>/current -> <hash>
	// RefreshFraction of hashed files above which the cached manifest is
	// replaced (default 0.2).
	RefreshFraction float64

	mu  sync.Mutex
	mem map[string]*imageBaseline
}

type imageBaseline struct {
	m     *changes.Manifest
	index []byte
}

// NewImageBaselines caches under stateDir/manifests for the golden images
// in imageCache.
func NewImageBaselines(stateDir, imageCache string) *ImageBaselines {
	return &ImageBaselines{Dir: filepath.Join(stateDir, "manifests"), ImageCache: imageCache}
}

var keyUnsafe = regexp.MustCompile(`[^a-zA-Z0-9._-]`)

// LineageKey is the cache key of a sandbox: <image>-<image hash>-<boot>,
// where boot is "template" for a sandbox restored from the image's
// fast-start template and "cold" for a cold-booted one.
func (b *ImageBaselines) LineageKey(sb sandbox.Sandbox) (string, error) {
	if sb.Image == "" {
		return "", fmt.Errorf("sandbox %s has no image", sb.Name)
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(b.ImageCache, sb.Image, "current"))
	if err != nil {
		return "", fmt.Errorf("image %s: %w", sb.Image, err)
	}
	boot := "cold"
	if sb.Restored {
		boot = "template"
	}
	return keyUnsafe.ReplaceAllString(sb.Image+"-"+filepath.Base(dir)+"-"+boot, "_"), nil
}

func (b *ImageBaselines) path(key string) string { return filepath.Join(b.Dir, key+".json.gz") }

// get returns the cached baseline of key, or nil if there is none (or it
// cannot be read: a cache miss is never an error).
func (b *ImageBaselines) get(key string) *imageBaseline {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ib := b.mem[key]; ib != nil {
		return ib
	}
	m, err := readManifestGz(b.path(key))
	if err != nil {
		return nil
	}
	ib := &imageBaseline{m: m, index: m.BaselineIndex()}
	b.remember(key, ib)
	return ib
}

func (b *ImageBaselines) remember(key string, ib *imageBaseline) {
	if b.mem == nil {
		b.mem = map[string]*imageBaseline{}
	}
	b.mem[key] = ib
}

// Put stores m as the baseline of key. m must be complete: taken without
// an index, or with this cache's index and Inherit applied.
func (b *ImageBaselines) Put(key string, m *changes.Manifest) error {
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return fmt.Errorf("image baseline dir: %w", err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(m); err != nil {
		return fmt.Errorf("encode image baseline: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("encode image baseline: %w", err)
	}
	tmp, err := os.CreateTemp(b.Dir, key+".*.tmp")
	if err != nil {
		return fmt.Errorf("image baseline: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("write image baseline: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write image baseline: %w", err)
	}
	if err := os.Rename(tmp.Name(), b.path(key)); err != nil {
		return fmt.Errorf("install image baseline: %w", err)
	}
	b.mu.Lock()
	b.remember(key, &imageBaseline{m: m, index: m.BaselineIndex()})
	b.mu.Unlock()
	return nil
}

// Forget drops key from memory and disk (tests and benchmarks measure
// the uncached path with it).
func (b *ImageBaselines) Forget(key string) error {
	b.mu.Lock()
	delete(b.mem, key)
	b.mu.Unlock()
	if err := os.Remove(b.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget image baseline %s: %w", key, err)
	}
	return nil
}

// stale reports whether a manifest taken with the cached index hashed so
// many files that the cache should be replaced by it.
func (b *ImageBaselines) stale(m *changes.Manifest) bool {
	frac := b.RefreshFraction
	if frac <= 0 {
		frac = 0.2
	}
	total := m.Stats.Hashed + m.Stats.Reused
	return total > 0 && float64(m.Stats.Hashed) > frac*float64(total)
}

func readManifestGz(path string) (*changes.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var m changes.Manifest
	if err := json.NewDecoder(zr).Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}

// imageIndex is what TakeManifest needs from the cache for one sandbox.
type imageIndex struct {
	key  string
	base *imageBaseline // nil on a miss
}

// lookupImageBaseline finds the sandbox's lineage and its cached
// baseline. ok=false: no cache configured, or the lineage is unknown
// (then the manifest is taken without an index, as before).
func (a *Activities) lookupImageBaseline(ctx context.Context, name string) (imageIndex, bool) {
	if a.Baselines == nil {
		return imageIndex{}, false
	}
	sb, err := a.HV.Get(ctx, name)
	if err != nil {
		return imageIndex{}, false
	}
	key, err := a.Baselines.LineageKey(sb)
	if err != nil {
		return imageIndex{}, false
	}
	return imageIndex{key: key, base: a.Baselines.get(key)}, true
}

// prepareImageIndex uploads the cached index of the sandbox's lineage
// and returns the cached manifest (for Manifest.Inherit), or nil when the
// manifest must hash everything.
func (a *Activities) prepareImageIndex(ctx context.Context, name string, opts *changes.ScriptOptions) (imageIndex, *changes.Manifest, error) {
	ii, ok := a.lookupImageBaseline(ctx, name)
	if !ok || ii.base == nil {
		return ii, nil, nil
	}
	if err := a.upload(ctx, name, changes.BaselineIndexPath, ii.base.index); err != nil {
		return ii, nil, fmt.Errorf("upload image baseline index: %w", err)
	}
	opts.BaselineIndex = changes.BaselineIndexPath
	return ii, ii.base.m, nil
}

// storeImageBaseline caches m for its lineage on a miss, or when the
// cached one has gone stale. Failing to cache never fails the manifest.
func (a *Activities) storeImageBaseline(ii imageIndex, m *changes.Manifest) {
	if a.Baselines == nil || ii.key == "" {
		return
	}
	if ii.base != nil && !a.Baselines.stale(m) {
		return
	}
	_ = a.Baselines.Put(ii.key, m)
}
