package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/airlock-dev/airlock/activities/apply"
	approvalsui "github.com/airlock-dev/airlock/approvals-ui"
	"github.com/airlock-dev/airlock/codec"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/store"
	"github.com/airlock-dev/airlock/worker"
)

func newLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func dialFor(cfg config.Config, logger *slog.Logger) (client.Client, error) {
	return cfg.Dial(client.Options{Logger: tlog.NewStructuredLogger(logger)})
}

func workerCmd(ctx context.Context, cfg config.Config, args []string) error {
	if len(args) == 0 {
		return usageError{"worker: need control, hypervisor or apply"}
	}
	fs := flag.NewFlagSet("worker "+args[0], flag.ContinueOnError)
	name := fs.String("name", "", "hypervisor host name (worker hypervisor)")
	env := fs.String("env", "", "apply environment (worker apply)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err.Error()}
	}
	logger := newLogger().With("worker", args[0])
	st, err := store.Open(ctx, cfg.Postgres.URL)
	if err != nil {
		return err
	}
	defer st.Close()
	c, err := dialFor(cfg, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	switch args[0] {
	case "control":
		logger.Info("control worker started", "queue", "airlock")
		return worker.RunControl(ctx, c, worker.ControlDeps{Config: cfg, Store: st})
	case "hypervisor":
		if *name == "" {
			return usageError{"worker hypervisor: --name is required"}
		}
		logger.Info("hypervisor worker started", "host", *name)
		return worker.RunHypervisor(ctx, c, worker.HypervisorDeps{Config: cfg, Host: *name, Store: st, Logger: logger})
	case "apply":
		e, ok := cfg.Envs[*env]
		if !ok {
			return fmt.Errorf("worker apply: unknown environment %q (configured: %s)", *env, strings.Join(cfg.EnvNames(), ", "))
		}
		logger.Info("apply worker started", "env", *env)
		return worker.RunApply(ctx, c, *env, &apply.Activities{
			Env: *env, Inventory: e.Inventory, KnownHosts: e.KnownHosts, SSHKey: e.SSHKey, Artifacts: st,
			SSHArgs: []string{"-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "IdentitiesOnly=yes"},
		})
	default:
		return usageError{fmt.Sprintf("worker: unknown kind %q", args[0])}
	}
}

func codecCmd(args []string) error {
	if len(args) == 0 || args[0] != "newkey" {
		return usageError{"codec: want newkey [ID]"}
	}
	id := "k1"
	if len(args) > 1 {
		id = args[1]
	}
	spec, err := codec.NewKeySpec(id)
	if err != nil {
		return err
	}
	fmt.Println(spec)
	return nil
}

// hashPasswordCmd reads a password on stdin and prints its argon2id hash
// for serve.users in the config file.
func hashPasswordCmd() error {
	b, err := io.ReadAll(io.LimitReader(os.Stdin, 4096))
	if err != nil {
		return err
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if len(pw) < 8 {
		return errors.New("hash-password: want at least 8 characters on stdin")
	}
	h, err := approvalsui.HashArgon2id(pw)
	if err != nil {
		return err
	}
	fmt.Println(h)
	return nil
}
