package codec

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
)

func newCodec(t *testing.T, ids ...string) (*Codec, string) {
	t.Helper()
	var specs []string
	for _, id := range ids {
		s, err := NewKeySpec(id)
		require.NoError(t, err)
		specs = append(specs, s)
	}
	spec := strings.Join(specs, ",")
	keys, err := ParseKeys(spec)
	require.NoError(t, err)
	c, err := New(keys)
	require.NoError(t, err)
	return c, spec
}

func TestRoundTripHidesClearText(t *testing.T) {
	c, _ := newCodec(t, "k1")
	dc := c.DataConverter()
	secret := "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI"
	p, err := dc.ToPayload(map[string]string{"output": secret})
	require.NoError(t, err)
	require.Equal(t, Encoding, string(p.Metadata[MetadataEncoding]))
	require.Equal(t, "k1", string(p.Metadata[MetadataKeyID]))
	require.NotContains(t, string(p.Data), "wJalrXUtnFEMI")

	var back map[string]string
	require.NoError(t, dc.FromPayload(p, &back))
	require.Equal(t, secret, back["output"])
}

func TestRotationDecodesOldKeys(t *testing.T) {
	old, oldSpec := newCodec(t, "old")
	p, err := old.DataConverter().ToPayload("hello")
	require.NoError(t, err)

	newSpec, err := NewKeySpec("new")
	require.NoError(t, err)
	keys, err := ParseKeys(newSpec + "," + oldSpec)
	require.NoError(t, err)
	rotated, err := New(keys)
	require.NoError(t, err)
	var s string
	require.NoError(t, rotated.DataConverter().FromPayload(p, &s))
	require.Equal(t, "hello", s)
	p2, err := rotated.DataConverter().ToPayload("x")
	require.NoError(t, err)
	require.Equal(t, "new", string(p2.Metadata[MetadataKeyID]))
}

func TestDecodeRefusesTamperingAndUnknownKeys(t *testing.T) {
	c, _ := newCodec(t, "k1")
	other, _ := newCodec(t, "k2")
	enc, err := c.Encode([]*commonpb.Payload{{Data: []byte("x")}})
	require.NoError(t, err)

	_, err = other.Decode(enc)
	require.ErrorContains(t, err, `unknown key id "k1"`)

	enc[0].Data[len(enc[0].Data)-1] ^= 0xff
	_, err = c.Decode(enc)
	require.Error(t, err)
}

func TestParseKeysErrors(t *testing.T) {
	for _, spec := range []string{"", "nokey", "k:notbase64!", "k:" + "c2hvcnQ="} {
		_, err := ParseKeys(spec)
		require.Error(t, err, spec)
		require.NotContains(t, err.Error(), "c2hvcnQ", "errors must not echo key material")
	}
}

func TestEndpointRequiresToken(t *testing.T) {
	c, _ := newCodec(t, "k1")
	enc, err := c.Encode([]*commonpb.Payload{{Metadata: map[string][]byte{"encoding": []byte("json/plain")}, Data: []byte(`"s3cret"`)}})
	require.NoError(t, err)
	body, err := json.Marshal(map[string]any{"payloads": []any{map[string]any{
		"metadata": map[string][]byte{MetadataEncoding: enc[0].Metadata[MetadataEncoding], MetadataKeyID: enc[0].Metadata[MetadataKeyID]},
		"data":     enc[0].Data,
	}}})
	require.NoError(t, err)
	h := Handler(c, EndpointOptions{Tokens: []string{"t0ken"}})

	req := httptest.NewRequest(http.MethodPost, "/decode", bytes.NewReader(body))
	req.RemoteAddr = "10.0.0.5:1234"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusUnauthorized, rec.Code)

	req = httptest.NewRequest(http.MethodPost, "/decode", bytes.NewReader(body))
	req.RemoteAddr = "10.0.0.5:1234"
	req.Header.Set("Authorization", "Bearer t0ken")
	req.Header.Set("Content-Type", "application/json")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), `"data":"InMzY3JldCI="`, "decoded payload is returned (base64 of \"s3cret\")")
}
