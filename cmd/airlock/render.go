package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"

	"github.com/airlock-dev/airlock/workflows"
)

// searchAttrs decodes keyword search attributes for display.
func searchAttrs(sa *commonpb.SearchAttributes) map[string]string {
	out := map[string]string{}
	dc := converter.GetDefaultDataConverter()
	for k, p := range sa.GetIndexedFields() {
		var s string
		if err := dc.FromPayload(p, &s); err == nil {
			out[k] = s
			continue
		}
		var list []string
		if err := dc.FromPayload(p, &list); err == nil {
			out[k] = strings.Join(list, ",")
		}
	}
	return out
}

func verificationText(st workflows.Status) string {
	if st.Verification == nil {
		return "not run"
	}
	if st.Verification.Detail != "" {
		return st.Verification.Status + ": " + st.Verification.Detail
	}
	return st.Verification.Status
}

func printStep(w io.Writer, s workflows.StepRecord) {
	fmt.Fprintf(w, "-- step %d %s: %s\n", s.N, s.Tool, oneLine(s.Args, 100))
	if s.Tool == "run" || s.Tool == "run_command" {
		out := strings.TrimRight(s.Output, "\n")
		if out != "" {
			for _, l := range strings.Split(out, "\n") {
				fmt.Fprintf(w, "   | %s\n", l)
			}
		}
		fmt.Fprintf(w, "   exit %d in %s (%d bytes", s.ExitCode, time.Duration(s.DurationMs)*time.Millisecond, s.TotalBytes)
		if s.OutputRef != "" {
			fmt.Fprintf(w, ", full output %s", s.OutputRef)
		}
		fmt.Fprintln(w, ")")
	} else if out := strings.TrimRight(s.Output, "\n"); out != "" && s.Error == "" {
		// Other agent tools: the first lines of what the model was told.
		lines := strings.Split(out, "\n")
		for i, l := range lines {
			if i == 6 {
				fmt.Fprintf(w, "   | … %d more lines\n", len(lines)-i)
				break
			}
			fmt.Fprintf(w, "   | %s\n", l)
		}
	}
	if s.Error != "" {
		fmt.Fprintf(w, "   error: %s\n", s.Error)
	}
}

func oneLine(s string, max int) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", " ⏎ ")
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

func printStatus(w io.Writer, id string, st workflows.Status) {
	fmt.Fprintf(w, "Task %s\n  goal:    %s\n  started: via %s by %s\n  target:  %s\n  phase:   %s\n", id, st.Goal, st.Origin.Via, st.Origin.By, targetText(st.Target), st.Phase)
	if st.Sandbox != nil {
		fmt.Fprintf(w, "  sandbox: %s (%s)\n", st.Sandbox.Name, st.Sandbox.IP)
	}
	if a := st.Agent; a != nil {
		printAgent(w, id, a)
	}
	if len(st.DiffSummary) > 0 {
		keys := make([]string, 0, len(st.DiffSummary))
		for k := range st.DiffSummary {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			if st.DiffSummary[k] != 0 {
				parts = append(parts, fmt.Sprintf("%s=%d", k, st.DiffSummary[k]))
			}
		}
		fmt.Fprintf(w, "  diff:    %s\n", strings.Join(parts, " "))
	}
	if st.DiffText != "" {
		fmt.Fprintf(w, "\n%s\n", indent(st.DiffText, "    "))
	}
	if st.Plan != nil {
		fmt.Fprintf(w, "  plan:    %s (%d tasks)\n  verification: %s\n", st.Plan.PlanHash, st.Plan.Tasks, verificationText(st))
		for _, f := range st.Plan.Flags {
			fmt.Fprintf(w, "  ! %s\n", f)
		}
	}
	if g := st.Approval; g != nil {
		fmt.Fprintf(w, "  approval: %d/%d votes from %s; expires %s\n", len(g.Votes), g.Policy.Quorum, strings.Join(g.Policy.Approvers, ", "), g.ExpiresAt.Local().Format(time.DateTime))
		for _, v := range g.Votes {
			fmt.Fprintf(w, "    ✓ %s at %s\n", v.By, v.At.Local().Format(time.DateTime))
		}
		for _, d := range g.Denied {
			fmt.Fprintf(w, "    ✗ %s (%s): %s\n", orUnknown(d.By), d.Decision, d.Reason)
		}
	}
	for _, a := range st.Applies {
		mode := "apply"
		if a.Check {
			mode = "check"
		}
		fmt.Fprintf(w, "  %s: ok=%v changed=%d failed=%d\n", mode, a.OK, a.Changed, a.Failed)
	}
	if st.Error != "" {
		fmt.Fprintf(w, "  error:   %s\n", st.Error)
	}
}

func targetText(t workflows.TargetSpec) string {
	if len(t.Hosts) == 0 {
		return t.Env
	}
	return t.Env + ":" + strings.Join(t.Hosts, ",")
}

func indent(s, pre string) string {
	return pre + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pre)
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// printAgent shows the agent's budgets, how it ended, open questions (with
// the command that answers them) and egress.
func printAgent(w io.Writer, id string, a *workflows.AgentStatus) {
	if a.Mode == "llm" {
		fmt.Fprintf(w, "  agent:   llm %s, %d/%d steps, %d/%d tokens, %d tool calls, %d errors", a.Model, a.Steps, a.MaxSteps, a.TokensUsed, a.MaxTokens, a.ToolCalls, a.Errors)
		if a.ReadOnly {
			fmt.Fprint(w, ", read-only")
		}
		fmt.Fprintln(w)
	}
	if a.EndReason != "" {
		fmt.Fprintf(w, "  agent ended: %s — %s\n", a.EndReason, a.EndDetail)
	}
	if a.Summary != "" {
		fmt.Fprintf(w, "  agent summary: %s\n", oneLine(a.Summary, 300))
	}
	for _, q := range a.Questions {
		fmt.Fprintf(w, "  question %s (%s, %s): %s [%s]", q.ID, q.Kind, q.Status, oneLine(q.Text, 200), strings.Join(q.Options, "|"))
		if q.Status == "answered" {
			fmt.Fprintf(w, " → %s by %s", q.Choice, q.AnsweredBy)
		}
		fmt.Fprintln(w)
		if q.Status == "pending" && len(q.Options) > 0 {
			fmt.Fprintf(w, "    answer: temporal workflow signal --workflow-id %s --name answer --input '{\"question_id\":\"%s\",\"by\":\"YOU\",\"choice\":\"%s\"}'\n", id, q.ID, q.Options[0])
		}
	}
	for _, e := range a.Egress {
		state := "closed (" + e.CloseReason + ")"
		if e.Open {
			state = "open until " + e.Until.Local().Format(time.DateTime)
		}
		fmt.Fprintf(w, "  egress %s (approved by %s): %s\n", e.Sandbox, e.ApprovedBy, state)
	}
	for _, pb := range a.Playbooks {
		fmt.Fprintf(w, "  agent-written notes %q: %d tasks (not applied)\n", pb.Name, len(pb.Tasks))
	}
}
