// Package heartbeat keeps a long-running Temporal activity alive: it
// records a heartbeat with a short description on a ticker until stopped.
package heartbeat

import (
	"context"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
)

// Every records a heartbeat with details every interval until the returned
// stop is called or ctx ends. Outside an activity it does nothing, so the
// plain-Go callers and tests can use the same code.
func Every(ctx context.Context, interval time.Duration, details string) (stop func()) {
	if !activity.IsActivity(ctx) {
		return func() {}
	}
	done := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx, details)
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}
