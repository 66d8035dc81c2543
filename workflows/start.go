package workflows

import (
	"fmt"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// StartOptions are how every Airlock entry point (CLI, web page, alert
// webhooks) starts an AgentTask: a readable summary for the Temporal UI,
// the search attributes for lists, and no second task under the same ID.
func StartOptions(id string, in TaskInput) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                TaskQueue,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		StaticSummary:            fmt.Sprintf("%s — via %s by %s → %s", in.Goal, in.Origin.Via, in.Origin.By, targetLabel(in.Target)),
		TypedSearchAttributes: temporal.NewSearchAttributes(
			SAPhase.ValueSet(PhaseValidating),
			SASource.ValueSet(in.Origin.Via),
			SATarget.ValueSet(targetLabel(in.Target)),
		),
	}
}
