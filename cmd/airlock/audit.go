package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/store"
)

// taskAudit tells the whole story of a task from the store's append-only
// events, checked against the workflow's history in Temporal.
func taskAudit(ctx context.Context, cfg config.Config, cl client.Client, args []string) error {
	fs := flag.NewFlagSet("task audit", flag.ContinueOnError)
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.Postgres.URL)
	if err != nil {
		return err
	}
	defer st.Close()
	events, err := st.ListEvents(ctx, id)
	if err != nil {
		return err
	}
	desc, err := cl.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return fmt.Errorf("describe %s: %w", id, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	fmt.Printf("Audit of %s\n  workflow status: %s, %d history events, started %s\n", id,
		info.GetStatus(), info.GetHistoryLength(), info.GetStartTime().AsTime().Local().Format(time.DateTime))
	if len(events) == 0 {
		return fmt.Errorf("no audit events stored for %s", id)
	}
	// The workflow numbers its events in the order it recorded them.
	sort.SliceStable(events, func(i, j int) bool { return events[i].Seq < events[j].Seq })
	for _, e := range events {
		printAuditEvent(os.Stdout, e.At, e.Kind, e.Actor, e.Data, e.ArtifactID)
	}
	return nil
}

func printAuditEvent(w io.Writer, at time.Time, kind, actor string, raw json.RawMessage, artifact string) {
	var d map[string]any
	_ = json.Unmarshal(raw, &d)
	s := func(k string) string {
		if v, ok := d[k]; ok && v != nil {
			return fmt.Sprint(v)
		}
		return ""
	}
	line := ""
	switch kind {
	case "task_started":
		line = fmt.Sprintf("started via %s by %s: %s (image %s → %s)", s("via"), actor, s("goal"), s("image"), s("target"))
	case "phase":
		line = "phase → " + s("phase")
	case "sandbox_created":
		line = fmt.Sprintf("sandbox %s at %s (restored from template: %s, ready in %s ms)", s("sandbox"), s("ip"), s("restored"), s("ready_ms"))
	case "command":
		line = fmt.Sprintf("step %s %s: %s → exit %s in %s ms, %s bytes", s("n"), s("tool"), oneLine(s("args"), 80), s("exit_code"), s("duration_ms"), s("total_bytes"))
		if e := s("error"); e != "" {
			line += " — error: " + e
		}
	case "diff":
		line = "diff: " + oneLine(s("summary"), 160)
	case "playbook":
		line = fmt.Sprintf("playbook %s (%s tasks, edited: %s)", s("plan_hash"), s("tasks"), s("edited"))
	case "verification":
		line = fmt.Sprintf("verification of %s: %s %s", s("plan_hash"), s("status"), oneLine(s("detail"), 120))
	case "approval_requested":
		line = fmt.Sprintf("approval requested for %s from %s (quorum %s, expires %s)", s("plan_hash"), s("approvers"), s("quorum"), s("expires_at"))
	case "approval":
		line = fmt.Sprintf("%s by %s on %s via %s (%s) %s", s("decision"), actor, s("plan_hash"), s("via"), s("outcome"), s("comment"))
		if s("override_verification") == "true" {
			line += " [overrode failed verification]"
		}
	case "approval_denied":
		line = fmt.Sprintf("DENIED %s by %s on %s: %s", s("decision"), orUnknown(actor), s("plan_hash"), s("reason"))
	case "reminder":
		line = fmt.Sprintf("reminder %s sent to %s", s("n"), s("approvers"))
	case "approval_expired":
		line = "approval expired for " + s("plan_hash")
	case "apply":
		mode := "apply"
		if s("check") == "true" {
			mode = "check (--check --diff)"
		}
		line = fmt.Sprintf("%s: ok=%s changed=%s failed=%s — %s", mode, s("ok"), s("changed"), s("failed"), s("recap"))
	case "cleanup":
		line = fmt.Sprintf("cleanup: destroyed %s (%s)", s("sandbox"), s("why"))
		if e := s("error"); e != "" {
			line = fmt.Sprintf("cleanup of %s FAILED: %s", s("sandbox"), e)
		}
	default:
		b, _ := json.Marshal(d)
		line = strings.TrimSpace(string(b))
	}
	if artifact != "" {
		line += "  [" + artifact + "]"
	}
	fmt.Fprintf(w, "%s  %-18s %s\n", at.Local().Format("2006-01-02 15:04:05"), kind, line)
}
