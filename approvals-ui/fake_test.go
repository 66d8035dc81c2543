package approvalsui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/airlock-dev/airlock/workflows"
)

// fakeTemporal answers the few client calls the UI makes from in-memory
// tasks. Decisions go through the real workflows.Gate, so refusals
// (stale plan, self-approval, double vote) are the workflow's own.
// Anything else panics through the nil embedded client.
type fakeTemporal struct {
	client.Client
	mu        sync.Mutex
	tasks     map[string]*fakeTask
	updates   []client.UpdateWorkflowOptions
	results   map[string]fakeUpdate // by update ID: Temporal's dedup
	healthErr error
}

type fakeTask struct {
	st      workflows.Status
	running bool
	started time.Time
}

type fakeUpdate struct {
	res workflows.DecisionResult
	err error
}

func newFakeTemporal() *fakeTemporal {
	return &fakeTemporal{tasks: map[string]*fakeTask{}, results: map[string]fakeUpdate{}}
}

func (f *fakeTemporal) add(st workflows.Status, running bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tasks[st.WorkflowID] = &fakeTask{st: st, running: running, started: time.Now().Add(-time.Duration(len(f.tasks)+1) * time.Minute)}
}

func (f *fakeTemporal) status(id string) workflows.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tasks[id].st
}

func (f *fakeTemporal) updateCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.updates)
}

func payload(v any) *commonpb.Payload {
	p, err := converter.GetDefaultDataConverter().ToPayload(v)
	if err != nil {
		panic(err)
	}
	return p
}

func (t *fakeTask) info() *workflowpb.WorkflowExecutionInfo {
	st := enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED
	if t.running {
		st = enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	}
	return &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{WorkflowId: t.st.WorkflowID, RunId: "run-" + t.st.WorkflowID},
		Type:      &commonpb.WorkflowType{Name: workflows.WorkflowType},
		StartTime: timestamppb.New(t.started),
		Status:    st,
		SearchAttributes: &commonpb.SearchAttributes{IndexedFields: map[string]*commonpb.Payload{
			"AirlockPhase":  payload(t.st.Phase),
			"AirlockSource": payload(t.st.Origin.Via),
			"AirlockTarget": payload("prod:prod-web-1"),
		}},
	}
}

func (f *fakeTemporal) DescribeWorkflowExecution(ctx context.Context, id, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return nil, serviceerror.NewNotFound("workflow not found for ID: " + id)
	}
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: t.info()}, nil
}

type jsonValue struct{ b []byte }

func (v jsonValue) HasValue() bool         { return v.b != nil }
func (v jsonValue) Get(ptr any) error      { return json.Unmarshal(v.b, ptr) }
func encoded(x any) converter.EncodedValue { b, _ := json.Marshal(x); return jsonValue{b} }

func (f *fakeTemporal) QueryWorkflow(ctx context.Context, id, runID, queryType string, args ...any) (converter.EncodedValue, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return nil, serviceerror.NewNotFound("workflow not found for ID: " + id)
	}
	if queryType != workflows.QueryStatus {
		return nil, fmt.Errorf("unknown query %q", queryType)
	}
	return encoded(t.st), nil
}

func (f *fakeTemporal) ListWorkflow(ctx context.Context, req *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.tasks))
	for id := range f.tasks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	resp := &workflowservice.ListWorkflowExecutionsResponse{}
	for _, id := range ids {
		resp.Executions = append(resp.Executions, f.tasks[id].info())
	}
	return resp, nil
}

func (f *fakeTemporal) CountWorkflow(ctx context.Context, req *workflowservice.CountWorkflowExecutionsRequest) (*workflowservice.CountWorkflowExecutionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, t := range f.tasks {
		if req.Query == fmt.Sprintf("WorkflowType = 'AgentTask' AND AirlockPhase = '%s'", t.st.Phase) {
			n++
		}
	}
	return &workflowservice.CountWorkflowExecutionsResponse{Count: n}, nil
}

func (f *fakeTemporal) CheckHealth(ctx context.Context, req *client.CheckHealthRequest) (*client.CheckHealthResponse, error) {
	return &client.CheckHealthResponse{}, f.healthErr
}

type fakeHandle struct {
	id, updateID string
	u            fakeUpdate
}

func (h fakeHandle) WorkflowID() string { return h.id }
func (h fakeHandle) RunID() string      { return "run-" + h.id }
func (h fakeHandle) UpdateID() string   { return h.updateID }
func (h fakeHandle) Get(ctx context.Context, ptr any) error {
	if h.u.err != nil {
		return h.u.err
	}
	b, _ := json.Marshal(h.u.res)
	return json.Unmarshal(b, ptr)
}

func (f *fakeTemporal) UpdateWorkflow(ctx context.Context, o client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = append(f.updates, o)
	if prev, ok := f.results[o.UpdateID]; ok && o.UpdateID != "" {
		return fakeHandle{id: o.WorkflowID, updateID: o.UpdateID, u: prev}, nil
	}
	t, ok := f.tasks[o.WorkflowID]
	if !ok || !t.running {
		return nil, serviceerror.NewNotFound("workflow execution already completed")
	}
	d, ok := o.Args[0].(workflows.Decision)
	if !ok {
		return nil, errors.New("bad update argument")
	}
	g := t.st.Approval
	if g == nil || !g.Open {
		return nil, errors.New("the task is not waiting for approval (phase " + t.st.Phase + ")")
	}
	res, reason := g.Decide(d, time.Now())
	u := fakeUpdate{res: res}
	if reason != "" {
		u.err = temporal.NewApplicationError(reason, "DecisionDenied")
	} else if !g.Open {
		t.st.Phase = workflows.PhaseApplying
	}
	if o.UpdateID != "" {
		f.results[o.UpdateID] = u
	}
	return fakeHandle{id: o.WorkflowID, updateID: o.UpdateID, u: u}, nil
}

// fakeEvents is the audit store.
type fakeEvents struct {
	mu      sync.Mutex
	byID    map[string][]Event
	pingErr error
}

func (e *fakeEvents) ListEvents(ctx context.Context, id string) ([]Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.byID[id]...), nil
}

func (e *fakeEvents) Ping(ctx context.Context) error { return e.pingErr }
