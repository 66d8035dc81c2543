package hv

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

func imageCache(t *testing.T) string {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "bookworm", "abc123"), 0o755))
	require.NoError(t, os.Symlink("abc123", filepath.Join(dir, "bookworm", "current")))
	return dir
}

func TestLineageKey(t *testing.T) {
	b := NewImageBaselines(t.TempDir(), imageCache(t))
	k, err := b.LineageKey(sandbox.Sandbox{Name: "sbx-a", Image: "bookworm", Restored: true})
	require.NoError(t, err)
	require.Equal(t, "bookworm-abc123-template", k)
	k, err = b.LineageKey(sandbox.Sandbox{Name: "sbx-a", Image: "bookworm"})
	require.NoError(t, err)
	require.Equal(t, "bookworm-abc123-cold", k)
	_, err = b.LineageKey(sandbox.Sandbox{Name: "sbx-a", Image: "trixie"})
	require.Error(t, err, "an image this host does not have has no lineage")
	_, err = b.LineageKey(sandbox.Sandbox{Name: "sbx-a"})
	require.Error(t, err)
}

func manifest(hashed, reused int) *changes.Manifest {
	return &changes.Manifest{Version: 1, Root: "/",
		Files: map[changes.Path]changes.FileEntry{
			"/etc/motd":                     {Type: changes.TypeFile, Mode: 0o644, Size: 3, Mtime: 1e18, Ctime: 1e18 + 5, Inode: 12, SHA256: strings.Repeat("a", 64), Hash: changes.HashComputed},
			"/etc":                          {Type: changes.TypeDir, Mode: 0o755, Inode: 2},
			"/var/lib/dpkg/info/curl.list":  {Type: changes.TypeFile, Size: 9, Mtime: 7, Ctime: 8, Inode: 40, SHA256: strings.Repeat("b", 64)},
			"/usr/bin/curl":                 {Type: changes.TypeFile, Size: 9, Mtime: 7, Ctime: 8, Inode: 41, SHA256: strings.Repeat("c", 64)},
			"/usr/share/doc/curl/copyright": {Type: changes.TypeFile, Size: 9, Mtime: 7, Ctime: 8, Inode: 42, SHA256: strings.Repeat("d", 64)},
		},
		Packages:     map[string]changes.Package{"curl": {Name: "curl", Version: "1", Status: "ii"}},
		PackageLists: map[string][]changes.Path{"curl": {"/usr/bin/curl", "/usr/share/doc/curl/copyright"}},
		Stats:        changes.Stats{Hashed: hashed, Reused: reused},
	}
}

func TestImageBaselinesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	b := NewImageBaselines(dir, imageCache(t))
	require.Nil(t, b.get("bookworm-abc123-template"), "a miss is nil, not an error")
	m := manifest(10, 0)
	require.NoError(t, b.Put("bookworm-abc123-template", m))
	require.FileExists(t, filepath.Join(dir, "manifests", "bookworm-abc123-template.json.gz"))

	// A new process (empty memory) reads the file back.
	b2 := NewImageBaselines(dir, b.ImageCache)
	got := b2.get("bookworm-abc123-template")
	require.NotNil(t, got)
	require.Equal(t, m.Files, got.m.Files)
	require.Equal(t, m.PackageLists, got.m.PackageLists)
	require.Equal(t, m.BaselineIndex(), got.index)
	require.Contains(t, string(got.index), "12:3:1000000000.0000000000:1000000000.0000000050\t"+strings.Repeat("a", 64))

	// The package lists a later manifest lacks (its .list was reused, not
	// re-hashed) come from the cached baseline.
	later := manifest(1, 4)
	later.PackageLists = map[string][]changes.Path{}
	later.Inherit(got.m)
	require.Equal(t, m.PackageLists["curl"], later.PackageLists["curl"])

	require.NoError(t, b2.Forget("bookworm-abc123-template"))
	require.Nil(t, b2.get("bookworm-abc123-template"))
	require.NoError(t, b2.Forget("bookworm-abc123-template"), "forgetting twice is fine")
}

func TestImageBaselinesUnreadableIsAMiss(t *testing.T) {
	dir := t.TempDir()
	b := NewImageBaselines(dir, imageCache(t))
	require.NoError(t, os.MkdirAll(b.Dir, 0o755))
	require.NoError(t, os.WriteFile(b.path("k"), []byte("not gzip"), 0o600))
	require.Nil(t, b.get("k"))
}

func TestStale(t *testing.T) {
	b := &ImageBaselines{}
	require.False(t, b.stale(manifest(10, 13000)))
	require.True(t, b.stale(manifest(5000, 8000)), "an image rebuild makes most files miss: replace the cache")
	require.False(t, b.stale(manifest(0, 0)))
}

func TestStoreImageBaseline(t *testing.T) {
	a := &Activities{Baselines: NewImageBaselines(t.TempDir(), imageCache(t))}
	a.storeImageBaseline(imageIndex{key: "k"}, manifest(10000, 0)) // miss: stored
	first := a.Baselines.get("k")
	require.NotNil(t, first)
	a.storeImageBaseline(imageIndex{key: "k", base: first}, manifest(3, 13000)) // hit: kept
	require.Same(t, first, a.Baselines.get("k"))
	a.storeImageBaseline(imageIndex{key: "k", base: first}, manifest(9000, 4000)) // stale: replaced
	require.NotSame(t, first, a.Baselines.get("k"))
	(&Activities{}).storeImageBaseline(imageIndex{key: "k"}, manifest(1, 1)) // no cache configured: no-op
}

func TestMemArtifacts(t *testing.T) {
	var s MemArtifacts
	ctx := context.Background()
	ref, err := s.PutArtifact(ctx, "x", strings.NewReader("hello"))
	require.NoError(t, err)
	require.Equal(t, int64(5), ref.Size)
	b, err := s.ReadArtifact(ctx, ref.ID)
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))
	_, err = s.ReadArtifact(ctx, "nope")
	require.Error(t, err)
}
