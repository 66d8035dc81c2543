package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestExampleConfigLoadsStrictly(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "deploy", "config.example.yaml"))
	require.NoError(t, err)
	require.Equal(t, "kvm", cfg.Hypervisor.DomainType)
	require.Equal(t, []string{"prod"}, cfg.EnvNames())
	require.Len(t, cfg.Serve.Users, 2)
}

func TestDevTemplateLoads(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "deploy", "dev", "config.yaml.in"))
	require.NoError(t, err)
	s := strings.NewReplacer("@REPO@", "/repo", "@DATA@", "/repo/.data", "@PG_URL@", "postgres://x@127.0.0.1/airlock",
		"@TEMPORAL@", "127.0.0.1:7233", "@SERVE@", "127.0.0.1:8080", "@UI_ORIGIN@", "http://127.0.0.1:8233", "@DEMO_HASH@", "$argon2id$x").Replace(string(b))
	p := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
	cfg, err := Load(p)
	require.NoError(t, err)
	require.Equal(t, "/repo/deploy/inventory/prod.ini,/var/lib/airlock/prod/hosts.ini", cfg.Envs["prod"].Inventory)
}

func TestUnknownKeyIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(p, []byte("temporal:\n  adress: x\n"), 0o600))
	_, err := Load(p)
	require.ErrorContains(t, err, "adress")
}
