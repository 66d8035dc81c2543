package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
		Tokens:        codecTokens(cfg),
		AllowLoopback: cfg.Serve.CodecLoopback,
		AllowOrigins:  cfg.Serve.CodecOrigins,
	})
	h, err := newHTTPHandler(cfg, c, st, http.StripPrefix("/codec", codecHandler), logger)
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

func codecTokens(cfg config.Config) []string {
	var out []string
	for _, t := range cfg.Serve.Tokens {
		_ = t // API tokens are stored hashed; the codec endpoint takes them through the UI's auth.
	}
	return out
}
