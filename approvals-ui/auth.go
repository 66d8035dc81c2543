package approvalsui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/airlock-dev/airlock/config"
)

// Roles a user or token may have.
const (
	RoleViewer   = "viewer"
	RoleApprover = "approver"
)

// identity is who is making a request.
type identity struct {
	Name string // login name
	By   string // the name recorded in Decision.By (config User.Approver, else Name)
	Role string
	Via  string // password | header | token
	SID  string // session id, for logout
}

func (id *identity) canDecide() bool { return id != nil && id.Role == RoleApprover }

// dummyHash is compared against when the user does not exist, so that a
// login for an unknown user costs the same as a wrong password.
var dummyHash = mustBcrypt("airlock-no-such-user")

func mustBcrypt(pw string) []byte {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		panic(err)
	}
	return h
}

// checkPassword verifies pw against a bcrypt ($2a$/$2b$/$2y$) or argon2id
// (PHC string: $argon2id$v=19$m=..,t=..,p=..$salt$hash) hash.
func checkPassword(hash, pw string) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("bcrypt: %w", err)
		}
		return true, nil
	case strings.HasPrefix(hash, "$argon2id$"):
		return checkArgon2id(hash, pw)
	default:
		return false, errors.New("unsupported password hash (want bcrypt or argon2id)")
	}
}

func checkArgon2id(encoded, pw string) (bool, error) {
	parts := strings.Split(encoded, "$")
	// "", "argon2id", "v=19", "m=65536,t=3,p=4", salt, hash
	if len(parts) != 6 {
		return false, errors.New("argon2id: malformed hash")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, fmt.Errorf("argon2id: unsupported version %q", parts[2])
	}
	var mem uint32
	var iters uint32
	var par uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &iters, &par); err != nil {
		return false, fmt.Errorf("argon2id: bad parameters %q: %w", parts[3], err)
	}
	if mem == 0 || iters == 0 || par == 0 || mem > 4<<20 {
		return false, fmt.Errorf("argon2id: unreasonable parameters %q", parts[3])
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, fmt.Errorf("argon2id: salt: %w", err)
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errors.New("argon2id: bad hash encoding")
	}
	got := argon2.IDKey([]byte(pw), salt, iters, mem, par, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// HashArgon2id returns a PHC-format argon2id hash of pw, for config files.
func HashArgon2id(pw string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	const mem, iters, par = 64 * 1024, 3, 2
	h := argon2.IDKey([]byte(pw), salt, iters, mem, par, 32)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, mem, iters, par,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(h)), nil
}

// auth holds users, tokens, the signing key and the login limiter.
type auth struct {
	users    map[string]config.User
	tokens   []tokenEntry
	key      []byte
	ttl      time.Duration
	secure   bool
	header   string
	proxies  []*net.IPNet
	limiter  *loginLimiter
	mu       sync.Mutex
	revoked  map[string]time.Time // logged-out session ids until their expiry
	nowFunc  func() time.Time
	cookieNm string
	csrfNm   string
}

type tokenEntry struct {
	sum  []byte
	user string
	role string
}

func newAuth(cfg config.Serve) (*auth, error) {
	a := &auth{users: map[string]config.User{}, ttl: cfg.SessionTTL, secure: !cfg.InsecureCookie,
		header: cfg.TrustedHeader, limiter: newLoginLimiter(5, 15*time.Minute), revoked: map[string]time.Time{}, nowFunc: time.Now}
	if a.ttl <= 0 {
		a.ttl = 12 * time.Hour
	}
	a.cookieNm, a.csrfNm = "airlock_session", "airlock_csrf"
	if a.secure {
		// __Host- cookies must be Secure, path /, and have no Domain.
		a.cookieNm, a.csrfNm = "__Host-airlock_session", "__Host-airlock_csrf"
	}
	for _, u := range cfg.Users {
		if u.Name == "" {
			return nil, errors.New("serve.users: a user without a name")
		}
		if u.Role != RoleViewer && u.Role != RoleApprover {
			return nil, fmt.Errorf("serve.users[%s]: role must be viewer or approver, got %q", u.Name, u.Role)
		}
		if !strings.HasPrefix(u.Hash, "$2") && !strings.HasPrefix(u.Hash, "$argon2id$") {
			return nil, fmt.Errorf("serve.users[%s]: hash must be bcrypt or argon2id", u.Name)
		}
		if _, dup := a.users[u.Name]; dup {
			return nil, fmt.Errorf("serve.users[%s]: duplicate user", u.Name)
		}
		a.users[u.Name] = u
	}
	for i, t := range cfg.Tokens {
		sum, err := hex.DecodeString(t.SHA256)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("serve.tokens[%d]: sha256 must be 64 hex digits", i)
		}
		if t.User == "" || (t.Role != RoleViewer && t.Role != RoleApprover) {
			return nil, fmt.Errorf("serve.tokens[%d]: needs a user and a role of viewer or approver", i)
		}
		a.tokens = append(a.tokens, tokenEntry{sum: sum, user: t.User, role: t.Role})
	}
	for _, p := range cfg.TrustedProxies {
		if !strings.Contains(p, "/") {
			if ip := net.ParseIP(p); ip != nil && ip.To4() != nil {
				p += "/32"
			} else {
				p += "/128"
			}
		}
		_, n, err := net.ParseCIDR(p)
		if err != nil {
			return nil, fmt.Errorf("serve.trusted_proxies: %w", err)
		}
		a.proxies = append(a.proxies, n)
	}
	if a.header != "" && len(a.proxies) == 0 {
		return nil, errors.New("serve.trusted_header needs serve.trusted_proxies")
	}
	key, err := sessionKey(cfg.SessionKey)
	if err != nil {
		return nil, err
	}
	a.key = key
	return a, nil
}

func sessionKey(s string) ([]byte, error) {
	if s == "" {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("random session key: %w", err)
		}
		return k, nil
	}
	for _, dec := range []func(string) ([]byte, error){hex.DecodeString, base64.StdEncoding.DecodeString, base64.RawURLEncoding.DecodeString} {
		if k, err := dec(s); err == nil && len(k) >= 32 {
			return k, nil
		}
	}
	return nil, errors.New("serve.session_key must be hex or base64 of at least 32 bytes")
}

// login checks a password. The caller has already consulted the limiter.
func (a *auth) login(name, pw string) (*identity, error) {
	u, ok := a.users[name]
	if !ok {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(pw))
		return nil, nil
	}
	good, err := checkPassword(u.Hash, pw)
	if err != nil || !good {
		return nil, err
	}
	return a.userIdentity(u, "password"), nil
}

func (a *auth) userIdentity(u config.User, via string) *identity {
	by := u.Name
	if u.Approver != "" {
		by = u.Approver
	}
	return &identity{Name: u.Name, By: by, Role: u.Role, Via: via}
}

// bearer resolves an API token. Every configured token is compared, in
// constant time, so the answer time does not say which one matched.
func (a *auth) bearer(r *http.Request) *identity {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	var found *identity
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum) == 1 && found == nil {
			found = &identity{Name: t.user, By: t.user, Role: t.role, Via: "token"}
		}
	}
	return found
}

// fromHeader takes the identity from the trusted header, only when the
// direct peer is a configured proxy. Users listed in config keep their
// role; others the proxy vouches for may look but not decide.
func (a *auth) fromHeader(r *http.Request) *identity {
	if a.header == "" {
		return nil
	}
	name := strings.TrimSpace(r.Header.Get(a.header))
	if name == "" || !a.fromProxy(r.RemoteAddr) {
		return nil
	}
	if u, ok := a.users[name]; ok {
		return a.userIdentity(u, "header")
	}
	return &identity{Name: name, By: name, Role: RoleViewer, Via: "header"}
}

func (a *auth) fromProxy(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, n := range a.proxies {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// session is the signed content of the session cookie.
type session struct {
	User string `json:"u"`
	SID  string `json:"sid"`
	Exp  int64  `json:"exp"`
}

func (a *auth) sign(msg []byte) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write(msg)
	return m.Sum(nil)
}

func (a *auth) newSessionCookie(name string) (*http.Cookie, error) {
	sid, err := randomToken()
	if err != nil {
		return nil, err
	}
	exp := a.nowFunc().Add(a.ttl)
	body, err := json.Marshal(session{User: name, SID: sid, Exp: exp.Unix()})
	if err != nil {
		return nil, fmt.Errorf("encode session: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	mac := base64.RawURLEncoding.EncodeToString(a.sign([]byte("session|" + payload)))
	return a.cookie(a.cookieNm, payload+"."+mac, exp), nil
}

func (a *auth) cookie(name, value string, exp time.Time) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: a.secure, SameSite: http.SameSiteStrictMode}
	if !exp.IsZero() {
		c.Expires = exp
		c.MaxAge = int(time.Until(exp).Seconds())
		if c.MaxAge <= 0 {
			c.MaxAge = -1
		}
	}
	return c
}

// fromSession verifies the session cookie and looks the user up again, so
// that a removed user or a changed role takes effect at once.
func (a *auth) fromSession(r *http.Request) *identity {
	c, err := r.Cookie(a.cookieNm)
	if err != nil {
		return nil
	}
	payload, mac, ok := strings.Cut(c.Value, ".")
	if !ok {
		return nil
	}
	got, err := base64.RawURLEncoding.DecodeString(mac)
	if err != nil || !hmac.Equal(got, a.sign([]byte("session|"+payload))) {
		return nil
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil
	}
	var s session
	if json.Unmarshal(body, &s) != nil || a.nowFunc().Unix() >= s.Exp {
		return nil
	}
	a.mu.Lock()
	_, gone := a.revoked[s.SID]
	a.mu.Unlock()
	if gone {
		return nil
	}
	u, ok := a.users[s.User]
	if !ok {
		return nil
	}
	id := a.userIdentity(u, "password")
	id.SID = s.SID
	return id
}

func (a *auth) revoke(sid string) {
	if sid == "" {
		return
	}
	now := a.nowFunc()
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, until := range a.revoked {
		if now.After(until) {
			delete(a.revoked, k)
		}
	}
	a.revoked[sid] = now.Add(a.ttl)
}

// CSRF: a random HttpOnly cookie, and in every form the HMAC of it. An
// attacker can neither read the cookie nor compute the HMAC without the key.

func (a *auth) csrfToken(cookieValue string) string {
	return base64.RawURLEncoding.EncodeToString(a.sign([]byte("csrf|" + cookieValue)))
}

func (a *auth) checkCSRF(r *http.Request, formValue string) bool {
	c, err := r.Cookie(a.csrfNm)
	if err != nil || c.Value == "" || formValue == "" {
		return false
	}
	return hmac.Equal([]byte(formValue), []byte(a.csrfToken(c.Value)))
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// loginLimiter counts failed logins per key (IP + user) in a fixed window.
type loginLimiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	fails  map[string]*failWindow
	now    func() time.Time
}

type failWindow struct {
	start time.Time
	n     int
}

func newLoginLimiter(max int, window time.Duration) *loginLimiter {
	return &loginLimiter{max: max, window: window, fails: map[string]*failWindow{}, now: time.Now}
}

// blocked reports whether key is locked out, and until when.
func (l *loginLimiter) blocked(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.fails[key]
	if !ok {
		return false, 0
	}
	left := w.start.Add(l.window).Sub(l.now())
	if left <= 0 {
		delete(l.fails, key)
		return false, 0
	}
	return w.n >= l.max, left
}

func (l *loginLimiter) fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.fails) > 100000 {
		for k, w := range l.fails {
			if now.Sub(w.start) > l.window {
				delete(l.fails, k)
			}
		}
	}
	w, ok := l.fails[key]
	if !ok || now.Sub(w.start) > l.window {
		l.fails[key] = &failWindow{start: now, n: 1}
		return
	}
	w.n++
}

func (l *loginLimiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, key)
}
