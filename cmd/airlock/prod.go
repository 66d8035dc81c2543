package main

import (
	"context"

	"github.com/airlock-dev/airlock/config"
)

func prodCmd(ctx context.Context, cfg config.Config, args []string) error {
	return usageError{"prod: not yet"}
}
