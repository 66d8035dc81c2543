package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/airlock-dev/airlock/store/audit"
)

const (
	// MaxArtifactSize bounds one artifact. (Streaming goes through COPY text
	// format, which doubles the bytes as hex; Postgres caps a line at 1 GiB.)
	MaxArtifactSize = 256 << 20
	// smallArtifact: content up to this size is buffered and inserted with
	// one statement; larger content streams through COPY, never held whole
	// in client memory.
	smallArtifact = 1 << 20
	// readChunk is how much GetArtifact's reader fetches per query.
	readChunk = 1 << 20
)

// PutArtifact stores the bytes of r under their sha256 and returns the ref.
// The same bytes stored again (any kind) keep the first row: writes are
// idempotent. The stored content is hashed again by Postgres and compared.
func (s *Store) PutArtifact(ctx context.Context, kind string, r io.Reader) (ArtifactRef, error) {
	if kind == "" {
		return ArtifactRef{}, fmt.Errorf("put artifact: %w: kind is empty", ErrInvalid)
	}
	head, err := io.ReadAll(io.LimitReader(r, smallArtifact+1))
	if err != nil {
		return ArtifactRef{}, fmt.Errorf("put artifact: read: %w", err)
	}
	if len(head) <= smallArtifact {
		return s.putSmall(ctx, kind, head)
	}
	return s.putStream(ctx, kind, io.MultiReader(bytes.NewReader(head), r))
}

func (s *Store) putSmall(ctx context.Context, kind string, b []byte) (ArtifactRef, error) {
	sum := sha256.Sum256(b)
	ref := newRef(sum[:], int64(len(b)))
	_, err := s.pool.Exec(ctx, `
		INSERT INTO artifacts (id, sha256, size, kind, content) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO NOTHING`, ref.ID, ref.SHA256, ref.Size, kind, b)
	if err != nil {
		return ArtifactRef{}, fmt.Errorf("put artifact: %w", classify(err))
	}
	return ref, nil
}

// putStream COPYs r into a temporary table while hashing it, checks the
// server's sha256 and length against ours, then moves the row into
// artifacts, all in one transaction.
func (s *Store) putStream(ctx context.Context, kind string, r io.Reader) (ArtifactRef, error) {
	var ref ArtifactRef
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE airlock_upload (content bytea NOT NULL) ON COMMIT DROP`); err != nil {
			return fmt.Errorf("temp table: %w", err)
		}
		hr := &hexCopyReader{src: r, h: sha256.New(), limit: MaxArtifactSize}
		if _, err := tx.Conn().PgConn().CopyFrom(ctx, hr, `COPY airlock_upload (content) FROM STDIN`); err != nil {
			if hr.err != nil { // our reader failed: report that, not the COPY abort
				return hr.err
			}
			return fmt.Errorf("copy: %w", classify(err))
		}
		ref = newRef(hr.h.Sum(nil), hr.n)
		var size int64
		var sum string
		if err := tx.QueryRow(ctx, `SELECT octet_length(content), encode(sha256(content), 'hex') FROM airlock_upload`).
			Scan(&size, &sum); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if size != ref.Size || sum != ref.SHA256 {
			return fmt.Errorf("verify: server has %d bytes sha256:%s, sent %d bytes %s", size, sum, ref.Size, ref.ID)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO artifacts (id, sha256, size, kind, content)
			SELECT $1, $2, $3, $4, content FROM airlock_upload
			ON CONFLICT (id) DO NOTHING`, ref.ID, ref.SHA256, ref.Size, kind); err != nil {
			return fmt.Errorf("insert: %w", classify(err))
		}
		return nil
	})
	if err != nil {
		return ArtifactRef{}, fmt.Errorf("put artifact: %w", err)
	}
	return ref, nil
}

func newRef(sum []byte, size int64) ArtifactRef {
	h := hex.EncodeToString(sum)
	return ArtifactRef{ID: "sha256:" + h, SHA256: h, Size: size}
}

// hexCopyReader renders src as one row of COPY text format for a bytea
// column ("\\x" + hex + "\n"), hashing and counting the raw bytes.
type hexCopyReader struct {
	src   io.Reader
	h     hash.Hash
	n     int64
	limit int64
	buf   []byte // raw bytes read but not yet emitted
	state int    // 0 prefix, 1 body, 2 newline, 3 done
	err   error  // first error from src or the limit
}

func (r *hexCopyReader) Read(p []byte) (int, error) {
	switch r.state {
	case 0:
		if len(p) < 3 {
			return 0, io.ErrShortBuffer
		}
		r.state = 1
		return copy(p, `\\x`), nil
	case 2:
		if len(p) < 1 {
			return 0, io.ErrShortBuffer
		}
		r.state = 3
		p[0] = '\n'
		return 1, nil
	case 3:
		return 0, io.EOF
	}
	if len(p) < 2 {
		return 0, io.ErrShortBuffer
	}
	if cap(r.buf) < len(p)/2 {
		r.buf = make([]byte, len(p)/2)
	}
	m, err := r.src.Read(r.buf[:len(p)/2])
	if m > 0 {
		r.h.Write(r.buf[:m])
		r.n += int64(m)
		if r.n > r.limit {
			r.err = fmt.Errorf("%w: artifact larger than %d bytes", ErrInvalid, r.limit)
			return 0, r.err
		}
		hex.Encode(p, r.buf[:m])
	}
	switch {
	case errors.Is(err, io.EOF):
		r.state = 2
	case err != nil:
		r.err = fmt.Errorf("read: %w", err)
		return 0, r.err
	}
	return 2 * m, nil
}

// StatArtifact returns an artifact's ref and kind, or ErrNotFound.
func (s *Store) StatArtifact(ctx context.Context, id string) (ref ArtifactRef, kind string, err error) {
	if err := audit.ValidArtifactID(id); err != nil {
		return ArtifactRef{}, "", err
	}
	err = s.pool.QueryRow(ctx, `SELECT id, sha256, size, kind FROM artifacts WHERE id = $1`, id).
		Scan(&ref.ID, &ref.SHA256, &ref.Size, &kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return ArtifactRef{}, "", fmt.Errorf("artifact %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return ArtifactRef{}, "", fmt.Errorf("stat artifact: %w", err)
	}
	return ref, kind, nil
}

// GetArtifact returns a reader over an artifact's content, or ErrNotFound.
// It fetches 1 MiB per query and holds no connection between reads; Close
// it anyway. Artifacts are immutable, so the chunks are consistent.
func (s *Store) GetArtifact(ctx context.Context, id string) (io.ReadCloser, error) {
	ref, _, err := s.StatArtifact(ctx, id)
	if err != nil {
		return nil, err
	}
	return &artifactReader{ctx: ctx, s: s, ref: ref}, nil
}

// ReadArtifact returns an artifact's whole content, or ErrNotFound.
func (s *Store) ReadArtifact(ctx context.Context, id string) ([]byte, error) {
	rc, err := s.GetArtifact(ctx, id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, rc.(*artifactReader).ref.Size)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, err
	}
	return b, nil
}

type artifactReader struct {
	ctx   context.Context
	s     *Store
	ref   ArtifactRef
	off   int64  // bytes of content consumed
	chunk []byte // fetched, not yet consumed
}

func (r *artifactReader) Read(p []byte) (int, error) {
	if len(r.chunk) == 0 {
		if r.off >= r.ref.Size {
			return 0, io.EOF
		}
		var b []byte
		err := r.s.pool.QueryRow(r.ctx, `SELECT substring(content FROM $2 FOR $3) FROM artifacts WHERE id = $1`,
			r.ref.ID, r.off+1, int64(readChunk)).Scan(&b)
		if err != nil {
			return 0, fmt.Errorf("read artifact %s at %d: %w", r.ref.ID, r.off, err)
		}
		if len(b) == 0 {
			return 0, fmt.Errorf("read artifact %s: %w at %d of %d", r.ref.ID, io.ErrUnexpectedEOF, r.off, r.ref.Size)
		}
		r.chunk = b
	}
	n := copy(p, r.chunk)
	r.chunk = r.chunk[n:]
	r.off += int64(n)
	return n, nil
}

func (r *artifactReader) Close() error {
	r.chunk = nil
	r.off = r.ref.Size
	return nil
}
