package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func TestHexCopyReaderFormat(t *testing.T) {
	in := "hello\n\\world"
	r := &hexCopyReader{src: iotest.OneByteReader(strings.NewReader(in)), h: sha256.New(), limit: 100}
	out, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, `\\x`+hex.EncodeToString([]byte(in))+"\n", string(out))
	require.Equal(t, int64(len(in)), r.n)
	want := sha256.Sum256([]byte(in))
	require.Equal(t, want[:], r.h.Sum(nil))
}

func TestHexCopyReaderLimit(t *testing.T) {
	r := &hexCopyReader{src: strings.NewReader(strings.Repeat("a", 11)), h: sha256.New(), limit: 10}
	_, err := io.ReadAll(r)
	require.ErrorIs(t, err, ErrInvalid)

	boom := errors.New("boom")
	r = &hexCopyReader{src: iotest.ErrReader(boom), h: sha256.New(), limit: 10}
	_, err = io.ReadAll(r)
	require.ErrorIs(t, err, boom)
}
