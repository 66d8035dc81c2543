// Command airlock is every Airlock process and the operator CLI:
//
//	airlock worker control|hypervisor --name H|apply --env E
//	airlock serve
//	airlock task start|list|show|watch|approve|reject|audit
//	airlock sandbox diff|reconcile
//	airlock prod up|down
//
// Configuration comes from --config (or AIRLOCK_CONFIG) plus environment
// overrides; see deploy/config.example.yaml.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/airlock-dev/airlock/config"
)

const usage = `airlock — AI agents do the work in sandbox VMs; humans approve what reaches production.

Usage:
  airlock [--config FILE] worker control
  airlock [--config FILE] worker hypervisor --name HOST
  airlock [--config FILE] worker apply --env ENV
  airlock [--config FILE] serve
  airlock [--config FILE] task start (-f task.yaml | --goal TEXT --runbook FILE) [--source IMAGE] [--target ENV:HOST] [--approvers a,b] [--as NAME]
  airlock [--config FILE] task list [--phase P] [--source S] [--target T]
  airlock [--config FILE] task show ID [--json]
  airlock [--config FILE] task watch ID
  airlock [--config FILE] task approve ID --as NAME [--comment TEXT] [--plan-hash H] [--override-verification]
  airlock [--config FILE] task reject ID --as NAME --comment TEXT
  airlock [--config FILE] task audit ID
  airlock [--config FILE] sandbox reconcile --name HOST
  airlock [--config FILE] sandbox diff SANDBOX --from SNAPSHOT [--to SNAPSHOT|now] [--json]
  airlock [--config FILE] prod up|down
  airlock codec newkey [ID]
  airlock hash-password < password-file     (argon2id hash for serve.users)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "airlock:", err)
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "airlock:", err)
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("airlock", flag.ContinueOnError)
	cfgPath := fs.String("config", os.Getenv("AIRLOCK_CONFIG"), "config file")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usageError{"no command"}
	}
	switch rest[0] {
	case "codec":
		return codecCmd(rest[1:])
	case "hash-password":
		return hashPasswordCmd()
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	switch rest[0] {
	case "worker":
		return workerCmd(ctx, cfg, rest[1:])
	case "serve":
		return serveCmd(ctx, cfg, rest[1:])
	case "task":
		return taskCmd(ctx, cfg, rest[1:])
	case "sandbox":
		return sandboxCmd(ctx, cfg, rest[1:])
	case "prod":
		return prodCmd(ctx, cfg, rest[1:])
	default:
		return usageError{fmt.Sprintf("unknown command %q", rest[0])}
	}
}
