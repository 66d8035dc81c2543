// Package config loads Airlock's YAML configuration (yaml.v3, strict) and
// dials Temporal with the payload codec installed. Every process — the
// three workers, `airlock serve` and the CLI — loads the same file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole file. Secrets (codec keys, tokens, password hashes)
// may come from the environment instead; see Load.
type Config struct {
	Temporal   Temporal               `yaml:"temporal"`
	Codec      Codec                  `yaml:"codec"`
	Postgres   Postgres               `yaml:"postgres"`
	StateDir   string                 `yaml:"state_dir"`
	Images     Images                 `yaml:"images"`
	Hypervisor Hypervisor             `yaml:"hypervisor"`
	Envs       map[string]Environment `yaml:"environments"`
	Serve      Serve                  `yaml:"serve"`
	LLM        LLM                    `yaml:"llm"`
}

// Temporal says where the cluster is.
type Temporal struct {
	Address   string `yaml:"address"`
	Namespace string `yaml:"namespace"`
}

// Codec holds payload encryption keys: "id:base64[,id:base64…]".
type Codec struct {
	Keys     string `yaml:"keys"`
	KeysFile string `yaml:"keys_file"`
}

// Postgres is the audit store.
type Postgres struct {
	URL string `yaml:"url"`
}

// Images says where golden images are cached.
type Images struct {
	CacheDir string   `yaml:"cache_dir"`
	Names    []string `yaml:"names"`
}

// Hypervisor configures `airlock worker hypervisor`.
type Hypervisor struct {
	URI          string `yaml:"uri"`
	DomainType   string `yaml:"domain_type"` // qemu (TCG) or kvm
	Network      string `yaml:"network"`
	MaxSandboxes int    `yaml:"max_sandboxes"`
	MemoryMiB    int    `yaml:"memory_mib"`
}

// Environment is an apply target: an Ansible inventory and its hosts.
type Environment struct {
	Inventory  string   `yaml:"inventory"`
	KnownHosts string   `yaml:"known_hosts"`
	SSHKey     string   `yaml:"ssh_key"`
	Hosts      []string `yaml:"hosts"` // hosts and groups tasks may target
}

// Serve configures `airlock serve`.
type Serve struct {
	Listen         string   `yaml:"listen"`
	Users          []User   `yaml:"users"`
	Tokens         []Token  `yaml:"tokens"`
	TrustedHeader  string   `yaml:"trusted_header"`
	TrustedProxies []string `yaml:"trusted_proxies"`
	CodecOrigins   []string `yaml:"codec_origins"`
	CodecLoopback  bool     `yaml:"codec_allow_loopback"`
	PagerDuty      Webhook  `yaml:"pagerduty"`
	Alertmanager   Webhook  `yaml:"alertmanager"`
	InsecureCookie bool     `yaml:"insecure_cookie"` // dev over plain http only
	// SessionKey signs session cookies and CSRF tokens: hex or base64 of at
	// least 32 bytes. Empty means a random key per start (sessions do not
	// survive a restart).
	SessionKey string `yaml:"session_key"`
	// SessionTTL is how long a login lasts; default 12h.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// MaxBodyBytes caps request bodies (forms, edited playbooks); larger
	// requests get 413. Default 1 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// User is a web user with a bcrypt or argon2id hash.
type User struct {
	Name     string `yaml:"name"`
	Hash     string `yaml:"hash"`
	Role     string `yaml:"role"` // viewer | approver
	Approver string `yaml:"approver,omitempty"`
}

// Token is an API bearer token (sha256 of it, hex) with a user identity.
type Token struct {
	User   string `yaml:"user"`
	SHA256 string `yaml:"sha256"`
	Role   string `yaml:"role"`
}

// Webhook configures an alert source.
type Webhook struct {
	Secrets []string `yaml:"secrets"`
	Token   string   `yaml:"token"`
}

// LLM is an OpenAI-compatible endpoint. The key never enters history:
// the control worker reads it from the environment variable APIKeyEnv
// names (empty: no key, e.g. a local Ollama or vLLM).
type LLM struct {
	BaseURL   string `yaml:"base_url"` // e.g. https://api.openai.com/v1, http://127.0.0.1:11434/v1
	Model     string `yaml:"model"`    // default model; a task's agent.model overrides it
	APIKeyEnv string `yaml:"api_key_env"`
	// APIType is openai (default) or azure; APIVersion is Azure's api-version.
	APIType    string `yaml:"api_type"`
	APIVersion string `yaml:"api_version"`
	// RequestTimeout bounds one HTTP request (default 2m); MaxAttempts is
	// how many requests one LLM step may make on 429/5xx/timeouts (default 5).
	RequestTimeout time.Duration `yaml:"request_timeout"`
	MaxAttempts    int           `yaml:"max_attempts"`
}

// Default returns the configuration the dev stack uses.
func Default() Config {
	return Config{
		Temporal:   Temporal{Address: "127.0.0.1:7233", Namespace: "default"},
		Postgres:   Postgres{URL: "postgres://postgres@127.0.0.1:55432/airlock?sslmode=disable"},
		StateDir:   "/var/lib/airlock",
		Images:     Images{CacheDir: "/var/cache/airlock/images", Names: []string{"bookworm"}},
		Hypervisor: Hypervisor{URI: "qemu:///system", DomainType: "qemu", Network: "airlock-sbx", MaxSandboxes: 8, MemoryMiB: 512},
		Envs:       map[string]Environment{},
		Serve:      Serve{Listen: "127.0.0.1:8080"},
	}
}

// Load reads path (strictly: unknown keys are errors) over the defaults,
// then applies environment overrides: AIRLOCK_TEMPORAL_ADDRESS,
// AIRLOCK_PG_URL, AIRLOCK_CODEC_KEYS, AIRLOCK_STATE_DIR, AIRLOCK_LLM_BASE_URL,
// AIRLOCK_LLM_MODEL, AIRLOCK_LLM_API_KEY_ENV.
func Load(path string) (Config, error) {
	cfg := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
		cfg.resolve(filepath.Dir(path))
	}
	if v := os.Getenv("AIRLOCK_TEMPORAL_ADDRESS"); v != "" {
		cfg.Temporal.Address = v
	}
	if v := os.Getenv("AIRLOCK_PG_URL"); v != "" {
		cfg.Postgres.URL = v
	}
	if v := os.Getenv("AIRLOCK_CODEC_KEYS"); v != "" {
		cfg.Codec.Keys = v
	}
	if v := os.Getenv("AIRLOCK_STATE_DIR"); v != "" {
		cfg.StateDir = v
	}
	if v := os.Getenv("AIRLOCK_LLM_BASE_URL"); v != "" {
		cfg.LLM.BaseURL = v
	}
	if v := os.Getenv("AIRLOCK_LLM_MODEL"); v != "" {
		cfg.LLM.Model = v
	}
	if v := os.Getenv("AIRLOCK_LLM_API_KEY_ENV"); v != "" {
		cfg.LLM.APIKeyEnv = v
	}
	return cfg, nil
}

// resolve makes relative paths in the file relative to its directory.
func (c *Config) resolve(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	c.Codec.KeysFile = abs(c.Codec.KeysFile)
	for name, e := range c.Envs {
		e.Inventory = abs(e.Inventory)
		e.KnownHosts = abs(e.KnownHosts)
		e.SSHKey = abs(e.SSHKey)
		c.Envs[name] = e
	}
}

// CodecKeys returns the key spec from the config, the env or the key file.
func (c Config) CodecKeys() (string, error) {
	if c.Codec.Keys != "" {
		return c.Codec.Keys, nil
	}
	if c.Codec.KeysFile != "" {
		b, err := os.ReadFile(c.Codec.KeysFile)
		if err != nil {
			return "", fmt.Errorf("codec keys file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", errors.New("no payload codec key: set codec.keys, codec.keys_file or AIRLOCK_CODEC_KEYS")
}

// EnvNames returns the configured environment names, sorted.
func (c Config) EnvNames() []string {
	names := make([]string, 0, len(c.Envs))
	for n := range c.Envs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
