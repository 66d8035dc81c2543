package codec

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strings"

	"go.temporal.io/sdk/converter"
)

// EndpointOptions control who may use the codec endpoint.
type EndpointOptions struct {
	// Tokens are accepted as "Authorization: Bearer <token>".
	Tokens []string
	// AllowLoopback lets requests from 127.0.0.1/::1 through without a
	// token: the dev stack's Temporal UI and CLI run on the same machine.
	AllowLoopback bool
	// AllowOrigins are sent back in CORS headers, for the Temporal UI.
	AllowOrigins []string
}

// Handler serves /encode and /decode for `temporal --codec-endpoint` and
// the Temporal UI's codec endpoint setting. Only authorised callers get
// clear text.
func Handler(c *Codec, opts EndpointOptions) http.Handler {
	inner := converter.NewPayloadCodecHTTPHandler(c)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" && contains(opts.AllowOrigins, origin) {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Allow-Credentials", "true")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type,X-Namespace,Authorization")
			w.Header().Set("Access-Control-Allow-Methods", "POST,OPTIONS")
			w.Header().Add("Vary", "Origin")
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if !authorised(r, opts) {
			http.Error(w, "codec endpoint: unauthorised", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	})
}

func authorised(r *http.Request, opts EndpointOptions) bool {
	if opts.AllowLoopback {
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
				return true
			}
		}
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	for _, want := range opts.Tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(want)) == 1 {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
