package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// runLLMAgent runs the LLM tool loop (issue: the agent). Not built yet:
// an llm-mode task fails clearly instead of pretending.
func (t *task) runLLMAgent(ctx workflow.Context, sbx sandbox.Info) error {
	return badInput(&InputError{Field: "agent.mode", Msg: "the LLM agent is not available on this installation yet; use mode runbook"})
}
