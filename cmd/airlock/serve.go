package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/airlock-dev/airlock/codec"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/store"
)

// serveCmd runs the HTTP server: approvals UI, JSON API, codec endpoint,
// health and metrics.
func serveCmd(ctx context.Context, cfg config.Config, args []string) error {
	logger := newLogger().With("process", "serve")
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
	pc, err := cfg.PayloadCodec()
	if err != nil {
		return err
	}
	codecHandler := codec.Handler(pc, codec.EndpointOptions{
		Tokens:        codecTokens(),
		AllowLoopback: cfg.Serve.CodecLoopback,
		AllowOrigins:  cfg.Serve.CodecOrigins,
	})
	h, err := newHTTPHandler(cfg, c, st, codecHandler, logger)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: cfg.Serve.Listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	logger.Info("serving", "addr", cfg.Serve.Listen)
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// codecTokens are bearer tokens for the codec endpoint, in clear, from
// AIRLOCK_CODEC_TOKENS (comma-separated): the UI's API tokens are stored
// hashed and cannot be handed to it.
func codecTokens() []string {
	var out []string
	for _, t := range strings.Split(os.Getenv("AIRLOCK_CODEC_TOKENS"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}
