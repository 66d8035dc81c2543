// Package catalog tells the workflow what this installation knows: golden
// images, apply environments and their hosts. It runs on the control
// queue so that the workflow's validation stays deterministic.
package catalog

import (
	"context"
	"sort"

	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/workflows"
)

// Activities serves the Catalog activity from configuration.
type Activities struct {
	Config config.Config
}

// Catalog lists known images, environments and target hosts.
func (a *Activities) Catalog(ctx context.Context) (workflows.Catalog, error) {
	c := workflows.Catalog{Images: append([]string(nil), a.Config.Images.Names...), Envs: a.Config.EnvNames()}
	seen := map[string]bool{}
	for _, env := range c.Envs {
		for _, h := range a.Config.Envs[env].Hosts {
			if !seen[h] {
				seen[h] = true
				c.Hosts = append(c.Hosts, h)
			}
		}
	}
	sort.Strings(c.Hosts)
	return c, nil
}
