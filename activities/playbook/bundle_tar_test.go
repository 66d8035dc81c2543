package playbook

import (
	"archive/tar"
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTarRoundTripKeepsPlanHash(t *testing.T) {
	b := &Bundle{Files: map[string][]byte{PlaybookFile: []byte("- hosts: all\n"), FilesDir + "/abc": []byte("x")}}
	b.PlanHash = b.hash()
	var buf bytes.Buffer
	require.NoError(t, b.WriteTar(&buf))
	back, err := ReadTar(&buf)
	require.NoError(t, err)
	require.Equal(t, b.PlanHash, back.PlanHash)
	require.Equal(t, b.Files, back.Files)
}

func TestReadTarRefusesUnsafeEntries(t *testing.T) {
	for _, hdr := range []*tar.Header{
		{Name: "../etc/passwd", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
		{Name: "/abs", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
		{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc", Mode: 0o777},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		require.NoError(t, tw.WriteHeader(hdr))
		if hdr.Size > 0 {
			_, _ = tw.Write([]byte("x"))
		}
		require.NoError(t, tw.Close())
		_, err := ReadTar(&buf)
		require.Error(t, err, hdr.Name)
	}
}
