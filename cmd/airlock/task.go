package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oklog/ulid/v2"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/activities/agent"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/workflows"
)

func taskCmd(ctx context.Context, cfg config.Config, args []string) error {
	if len(args) == 0 {
		return usageError{"task: missing subcommand"}
	}
	cl, err := cfg.Dial(client.Options{})
	if err != nil {
		return err
	}
	defer cl.Close()
	switch args[0] {
	case "start":
		return taskStart(ctx, cl, args[1:])
	case "list":
		return taskList(ctx, cl, args[1:])
	case "show":
		return taskShow(ctx, cl, args[1:])
	case "watch":
		return taskWatch(ctx, cl, args[1:])
	case "approve", "reject":
		return taskDecide(ctx, cl, args[0], args[1:])
	case "audit":
		return taskAudit(ctx, cfg, cl, args[1:])
	default:
		return usageError{fmt.Sprintf("task: unknown subcommand %q", args[0])}
	}
}

// parseInterleaved parses flags that may come after positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "unknown"
}

func taskStart(ctx context.Context, cl client.Client, args []string) error {
	fs := flag.NewFlagSet("task start", flag.ContinueOnError)
	file := fs.String("f", "", "task file (YAML or JSON)")
	goal := fs.String("goal", "", "the task in words")
	runbook := fs.String("runbook", "", "runbook file")
	source := fs.String("source", "", "golden image (default bookworm)")
	target := fs.String("target", "", "ENV or ENV:HOST[,HOST]")
	approvers := fs.String("approvers", "", "comma-separated approvers")
	as := fs.String("as", currentUser(), "who starts the task")
	id := fs.String("id", "", "workflow ID (default task-<ulid>)")
	if _, err := parseInterleaved(fs, args); err != nil {
		return err
	}
	var in workflows.TaskInput
	var err error
	switch {
	case *file != "":
		if in, err = agent.LoadTask(*file); err != nil {
			return err
		}
	case *goal != "" && *runbook != "":
		rb, err := agent.LoadRunbook(*runbook)
		if err != nil {
			return err
		}
		in = workflows.TaskInput{Goal: *goal, Agent: workflows.AgentSpec{Mode: "runbook", Steps: rb.Steps}}
		in.Source.Image = "bookworm"
	default:
		return usageError{"task start: need -f FILE, or --goal and --runbook"}
	}
	if *source != "" {
		in.Source.Image = *source
	}
	if *target != "" {
		env, hosts, _ := strings.Cut(*target, ":")
		in.Target.Env = env
		in.Target.Hosts = nil
		if hosts != "" {
			in.Target.Hosts = strings.Split(hosts, ",")
		}
	}
	if *approvers != "" {
		in.Approval.Approvers = strings.Split(*approvers, ",")
	}
	in.Origin = workflows.Origin{Via: "cli", By: *as}
	in.Normalize()
	if err := in.Validate(workflows.Catalog{}); err != nil {
		return err
	}
	wid := *id
	if wid == "" {
		wid = "task-" + strings.ToLower(ulid.Make().String())
	}
	run, err := StartTask(ctx, cl, wid, in)
	if err != nil {
		return err
	}
	fmt.Printf("started %s (run %s)\n", run.GetID(), run.GetRunID())
	return nil
}

// StartTask starts an AgentTask with its summary and search attributes.
func StartTask(ctx context.Context, cl client.Client, id string, in workflows.TaskInput) (client.WorkflowRun, error) {
	run, err := cl.ExecuteWorkflow(ctx, workflows.StartOptions(id, in), workflows.WorkflowType, in)
	if err != nil {
		return nil, fmt.Errorf("start task: %w", err)
	}
	return run, nil
}

func taskList(ctx context.Context, cl client.Client, args []string) error {
	fs := flag.NewFlagSet("task list", flag.ContinueOnError)
	phase := fs.String("phase", "", "filter by phase")
	source := fs.String("source", "", "filter by source: cli, ui, pagerduty, alertmanager")
	target := fs.String("target", "", "filter by target")
	if _, err := parseInterleaved(fs, args); err != nil {
		return err
	}
	q := fmt.Sprintf("WorkflowType = '%s'", workflows.WorkflowType)
	for _, f := range []struct{ attr, v string }{{"AirlockPhase", *phase}, {"AirlockSource", *source}, {"AirlockTarget", *target}} {
		if f.v != "" {
			q += fmt.Sprintf(" AND %s = '%s'", f.attr, strings.ReplaceAll(f.v, "'", ""))
		}
	}
	resp, err := cl.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: q, PageSize: 200})
	if err != nil {
		return fmt.Errorf("list tasks: %w", err)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPHASE\tSOURCE\tTARGET\tSTARTED")
	for _, e := range resp.Executions {
		sa := searchAttrs(e.GetSearchAttributes())
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.GetExecution().GetWorkflowId(), sa["AirlockPhase"], sa["AirlockSource"], sa["AirlockTarget"], e.GetStartTime().AsTime().Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func queryStatus(ctx context.Context, cl client.Client, id string) (workflows.Status, error) {
	var st workflows.Status
	v, err := cl.QueryWorkflow(ctx, id, "", workflows.QueryStatus)
	if err != nil {
		return st, fmt.Errorf("query %s: %w", id, err)
	}
	if err := v.Get(&st); err != nil {
		return st, fmt.Errorf("decode status: %w", err)
	}
	return st, nil
}

func oneID(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", usageError{fs.Name() + ": need exactly one task ID"}
	}
	return pos[0], nil
}

func taskShow(ctx context.Context, cl client.Client, args []string) error {
	fs := flag.NewFlagSet("task show", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the raw status")
	withPlaybook := fs.Bool("playbook", false, "also print the playbook")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	st, err := queryStatus(ctx, cl, id)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(os.Stdout, id, st)
	if *withPlaybook && st.Plan != nil {
		fmt.Printf("\n--- playbook %s ---\n%s\n", st.Plan.PlanHash, st.Plan.Playbook)
	}
	return nil
}

// taskWatch follows a task until it waits for a human or ends.
func taskWatch(ctx context.Context, cl client.Client, args []string) error {
	fs := flag.NewFlagSet("task watch", flag.ContinueOnError)
	untilDone := fs.Bool("until-done", false, "keep following through approval until the task ends")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	phase, steps := "", 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		st, err := queryStatus(ctx, cl, id)
		if err != nil {
			return err
		}
		for ; steps < len(st.Steps); steps++ {
			printStep(os.Stdout, st.Steps[steps])
		}
		if st.Phase != phase {
			phase = st.Phase
			fmt.Printf("== phase: %s\n", phase)
		}
		if (phase == workflows.PhaseAwaiting && !*untilDone) || isFinal(phase) {
			printStatus(os.Stdout, id, st)
			if st.Error != "" {
				return errors.New(st.Error)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func isFinal(phase string) bool {
	switch phase {
	case workflows.PhaseApplied, workflows.PhaseRejected, workflows.PhaseExpired, workflows.PhaseFailed, workflows.PhaseCancelled:
		return true
	}
	return false
}

func taskDecide(ctx context.Context, cl client.Client, verb string, args []string) error {
	fs := flag.NewFlagSet("task "+verb, flag.ContinueOnError)
	as := fs.String("as", "", "approver name (required)")
	comment := fs.String("comment", "", "comment (required to reject)")
	planHash := fs.String("plan-hash", "", "the plan you reviewed (default: the current one, shown first)")
	override := fs.Bool("override-verification", false, "approve a plan that failed verification (recorded)")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	if *as == "" {
		return usageError{"task " + verb + ": --as NAME is required"}
	}
	if verb == "reject" && strings.TrimSpace(*comment) == "" {
		return usageError{"task reject: --comment is required"}
	}
	hash := *planHash
	if hash == "" {
		st, err := queryStatus(ctx, cl, id)
		if err != nil {
			return err
		}
		if st.Plan == nil {
			return fmt.Errorf("task %s has no plan yet (phase %s)", id, st.Phase)
		}
		hash = st.Plan.PlanHash
		fmt.Printf("deciding on plan %s (verification: %s)\n", hash, verificationText(st))
	}
	d := workflows.Decision{Decision: verb, By: *as, Comment: *comment, PlanHash: hash, Override: *override}
	h, err := cl.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: id, UpdateName: workflows.UpdateDecide, Args: []any{d},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err != nil {
		return fmt.Errorf("%s refused: %s", verb, appMessage(err))
	}
	var res workflows.DecisionResult
	if err := h.Get(ctx, &res); err != nil {
		return fmt.Errorf("%s refused: %s", verb, appMessage(err))
	}
	fmt.Printf("%s by %s: %s (%d/%d votes)\n", verb, *as, res.Outcome, res.Votes, res.Quorum)
	return nil
}

// appMessage is the workflow's own words for a refused update, without
// the SDK's wrapping.
func appMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	return err.Error()
}
