package workflows

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/codec"
)

// TestReplayRecordedHistories replays every history recorded from a real
// end-to-end run (make replay-record) against the current workflow code:
// a non-deterministic change fails here.
func TestReplayRecordedHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no recorded histories in workflows/testdata; run make replay-record")
	keyText, err := os.ReadFile(filepath.Join("testdata", "codec.key"))
	require.NoError(t, err)
	keys, err := codec.ParseKeys(strings.TrimSpace(string(keyText)))
	require.NoError(t, err)
	c, err := codec.New(keys)
	require.NoError(t, err)

	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r, err := worker.NewWorkflowReplayerWithOptions(worker.WorkflowReplayerOptions{DataConverter: c.DataConverter()})
			require.NoError(t, err)
			r.RegisterWorkflowWithOptions(AgentTask, RegisterOptions())
			fh, err := os.Open(f)
			require.NoError(t, err)
			defer fh.Close()
			h, err := client.HistoryFromJSON(fh, client.HistoryJSONOptions{})
			require.NoError(t, err)
			started := h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes()
			require.NotNil(t, started, "history must begin with WorkflowExecutionStarted")
			// Replay under the recorded workflow ID: the workflow derives its
			// sandbox names from it.
			require.NoError(t, r.ReplayWorkflowHistoryWithOptions(nil, h, worker.ReplayWorkflowHistoryOptions{
				OriginalExecution: workflow.Execution{ID: started.GetWorkflowId(), RunID: started.GetOriginalExecutionRunId()},
			}))
		})
	}
}
