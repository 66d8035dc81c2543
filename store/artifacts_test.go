package store_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/store"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestArtifactsDedupeAndHash(t *testing.T) {
	e := setup(t)
	content := []byte("hello, audit\n")
	ref, err := e.st.PutArtifact(e.ctx, "output", bytes.NewReader(content))
	require.NoError(t, err)
	require.Equal(t, store.ArtifactRef{ID: "sha256:" + sum(content), SHA256: sum(content), Size: int64(len(content))}, ref)

	// Same bytes again, even under another kind and concurrently: same ref, one row.
	var wg sync.WaitGroup
	refs := make([]store.ArtifactRef, 4)
	errs := make([]error, 4)
	for i := range refs {
		wg.Go(func() { refs[i], errs[i] = e.st.PutArtifact(e.ctx, "diff", bytes.NewReader(content)) })
	}
	wg.Wait()
	for i := range refs {
		require.NoError(t, errs[i])
		require.Equal(t, ref, refs[i])
	}
	require.Equal(t, 1, e.count(t, `SELECT count(*) FROM artifacts`))
	_, kind, err := e.st.StatArtifact(e.ctx, ref.ID)
	require.NoError(t, err)
	require.Equal(t, "output", kind, "first write wins")

	got, err := e.st.ReadArtifact(e.ctx, ref.ID)
	require.NoError(t, err)
	require.Equal(t, content, got)
	// Postgres agrees on the hash.
	var serverSum string
	require.NoError(t, e.query(t, `SELECT encode(sha256(content), 'hex') FROM artifacts WHERE id = $1`, ref.ID).Scan(&serverSum))
	require.Equal(t, ref.SHA256, serverSum)

	// An event may reference it.
	_, _, err = e.st.AppendEvent(e.ctx, store.Event{WorkflowID: "task-x", ActivityID: "1", Kind: store.KindCommand, ArtifactID: ref.ID})
	require.NoError(t, err)
}

func TestArtifactEmptyAndMissing(t *testing.T) {
	e := setup(t)
	ref, err := e.st.PutArtifact(e.ctx, "output", strings.NewReader(""))
	require.NoError(t, err)
	require.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", ref.SHA256)
	got, err := e.st.ReadArtifact(e.ctx, ref.ID)
	require.NoError(t, err)
	require.Empty(t, got)

	_, err = e.st.GetArtifact(e.ctx, "sha256:"+strings.Repeat("0", 64))
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = e.st.GetArtifact(e.ctx, "sha256:XYZ")
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = e.st.PutArtifact(e.ctx, "", strings.NewReader("x"))
	require.ErrorIs(t, err, store.ErrInvalid)
}

// TestLargeArtifactRoundTrip streams 20 MB in and out. The write path must
// not hold the content in client memory (it goes through COPY), so the
// bytes allocated while storing stay well under the artifact's size.
func TestLargeArtifactRoundTrip(t *testing.T) {
	e := setup(t)
	const size = 20 << 20
	src := func() io.Reader { return io.LimitReader(rand.NewChaCha8([32]byte{7}), size) }
	h := sha256.New()
	_, err := io.Copy(h, src())
	require.NoError(t, err)
	want := hex.EncodeToString(h.Sum(nil))

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ref, err := e.st.PutArtifact(e.ctx, "disk-diff", src())
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	require.Equal(t, want, ref.SHA256)
	require.Equal(t, int64(size), ref.Size)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("PutArtifact(20 MB) allocated %.1f MB", float64(allocated)/(1<<20))
	require.Less(t, allocated, uint64(size/2))

	// Stored again: deduplicated.
	ref2, err := e.st.PutArtifact(e.ctx, "disk-diff", src())
	require.NoError(t, err)
	require.Equal(t, ref, ref2)
	require.Equal(t, 1, e.count(t, `SELECT count(*) FROM artifacts`))

	rc, err := e.st.GetArtifact(e.ctx, ref.ID)
	require.NoError(t, err)
	defer rc.Close()
	h.Reset()
	n, err := io.Copy(h, rc)
	require.NoError(t, err)
	require.Equal(t, int64(size), n)
	require.Equal(t, want, hex.EncodeToString(h.Sum(nil)))

	whole, err := e.st.ReadArtifact(e.ctx, ref.ID)
	require.NoError(t, err)
	require.Equal(t, want, sum(whole))
}
