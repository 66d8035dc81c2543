package catalog

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/config"
)

func TestCatalogFromConfig(t *testing.T) {
	cfg := config.Default()
	cfg.Envs = map[string]config.Environment{
		"prod":    {Hosts: []string{"web", "prod-web-1"}},
		"staging": {Hosts: []string{"web", "stage-1"}},
	}
	a := &Activities{Config: cfg}
	c, err := a.Catalog(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"bookworm"}, c.Images)
	require.Equal(t, []string{"prod", "staging"}, c.Envs)
	require.Equal(t, []string{"prod-web-1", "stage-1", "web"}, c.Hosts)
}
