package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"

	"go.temporal.io/sdk/client"

	approvalsui "github.com/airlock-dev/airlock/approvals-ui"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/store"
)

// newHTTPHandler assembles what `airlock serve` answers: the approvals
// pages, the JSON API, /codec, /healthz and /metrics.
func newHTTPHandler(cfg config.Config, c client.Client, st *store.Store, codecHandler http.Handler, logger *slog.Logger) (http.Handler, error) {
	return approvalsui.New(approvalsui.Deps{
		Temporal: c,
		Events:   storeEvents{st},
		Config:   cfg.Serve,
		Codec:    codecHandler,
		Logger:   logger,
	})
}

// storeEvents adapts the audit store to the UI's view of events.
type storeEvents struct{ st *store.Store }

func (s storeEvents) Ping(ctx context.Context) error { return s.st.Ping(ctx) }

func (s storeEvents) ListEvents(ctx context.Context, workflowID string) ([]approvalsui.Event, error) {
	evs, err := s.st.ListEvents(ctx, workflowID)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Seq < evs[j].Seq })
	out := make([]approvalsui.Event, 0, len(evs))
	for _, e := range evs {
		var data map[string]any
		_ = json.Unmarshal(e.Data, &data)
		out = append(out, approvalsui.Event{ID: e.ID, WorkflowID: e.WorkflowID, Kind: e.Kind, Actor: e.Actor, At: e.At, Data: data, ArtifactID: e.ArtifactID})
	}
	return out, nil
}
