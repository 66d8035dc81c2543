package approvalsui

import (
	"encoding/json"
	"fmt"
	"html/template"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/airlock-dev/airlock/workflows"
)

// Page budgets keep the task page well under 100 KB before any file diff
// is opened: file diffs, step outputs and the playbook are shown inline up
// to a budget and behind a link beyond it.
const (
	inlineDiffBudget   = 24 << 10 // rendered bytes of embedded file diffs
	inlineDiffPerFile  = 8 << 10
	maxFilesShown      = 80
	maxLinesShown      = 100 // per non-file section (packages, services, ...)
	inlineStepBudget   = 12 << 10
	inlineStepPerStep  = 2 << 10
	maxStepsShown      = 50
	stepArgsMax        = 200
	inlinePlaybookMax  = 12 << 10
	inlineEventsMax    = 40
	inlineEventDataMax = 200
)

var funcs = template.FuncMap{
	"short":   shortHash,
	"when":    fmtTime,
	"ago":     ago,
	"upper":   strings.ToUpper,
	"join":    strings.Join,
	"add":     func(a, b int) int { return a + b },
	"kb":      func(n int) string { return fmt.Sprintf("%.1f KB", float64(n)/1024) },
	"final":   isFinal,
	"lineCls": lineClass,
}

func shortHash(h string) string {
	if i := strings.IndexByte(h, ':'); i >= 0 && len(h) > i+13 {
		return h[:i+13]
	}
	return h
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		s = fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

func isFinal(phase string) bool {
	switch phase {
	case workflows.PhaseApplied, workflows.PhaseRejected, workflows.PhaseExpired, workflows.PhaseFailed, workflows.PhaseCancelled:
		return true
	}
	return false
}

func lineClass(l string) string {
	switch {
	case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"):
		return "h"
	case strings.HasPrefix(l, "+"):
		return "a"
	case strings.HasPrefix(l, "-"):
		return "d"
	case strings.HasPrefix(l, "@@"):
		return "h"
	}
	return ""
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}

// tail keeps the last n bytes of s on a rune boundary.
func tail(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	i := len(s) - n
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return s[i:], true
}

// diffView is DiffText (changes.Format output) split into its sections,
// with each file's unified diff separate so it can sit behind an expander.
type diffView struct {
	Sections []diffSection
	Summary  string
	Raw      string // set when the text has no recognisable sections
}

type diffSection struct {
	Title string
	Count string
	Lines []string   // non-file sections
	Files []diffFile // the Files section
	More  int        // entries not shown on the task page
}

type diffFile struct {
	N        int
	Action   string // A | M | D
	Path     string
	Desc     string
	Diff     []string
	Omitted  string
	Inline   bool // the diff is embedded in the page
	Clipped  bool // embedded, but cut; the full diff is on the file page
	DiffSize int
}

var sectionRe = regexp.MustCompile(`^([A-Z][A-Za-z ]+) \((\d+)\)$`)
var fileRe = regexp.MustCompile(`^  ([AMD]) (\S.*?)(?:  (.*))?$`)

func parseDiff(text string) diffView {
	var v diffView
	if strings.TrimSpace(text) == "" {
		return v
	}
	var cur *diffSection
	var file *diffFile
	n := 0
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if m := sectionRe.FindStringSubmatch(l); m != nil {
			v.Sections = append(v.Sections, diffSection{Title: m[1], Count: m[2]})
			cur, file = &v.Sections[len(v.Sections)-1], nil
			continue
		}
		if strings.HasPrefix(l, "Summary: ") {
			v.Summary = strings.TrimPrefix(l, "Summary: ")
			cur, file = nil, nil
			continue
		}
		if cur == nil {
			v.Raw += l + "\n"
			continue
		}
		if cur.Title == "Files" {
			if body, ok := strings.CutPrefix(l, "      "); ok && file != nil {
				if strings.HasPrefix(body, "(diff omitted: ") && len(file.Diff) == 0 {
					file.Omitted = strings.TrimSuffix(strings.TrimPrefix(body, "(diff omitted: "), ")")
					continue
				}
				file.Diff = append(file.Diff, body)
				file.DiffSize += len(body) + 1
				continue
			}
			if m := fileRe.FindStringSubmatch(l); m != nil {
				n++
				cur.Files = append(cur.Files, diffFile{N: n, Action: m[1], Path: m[2], Desc: m[3]})
				file = &cur.Files[len(cur.Files)-1]
				continue
			}
		}
		cur.Lines = append(cur.Lines, strings.TrimPrefix(l, "  "))
	}
	if len(v.Sections) == 0 {
		return diffView{Raw: text}
	}
	if strings.TrimSpace(v.Raw) == "" {
		v.Raw = ""
	}
	return v
}

// budget decides what of the diff is embedded in the task page: file
// diffs up to a budget of rendered bytes (each line costs its escaped text
// plus its <span>), a bounded number of files and lines per section.
func (v *diffView) budget() {
	left := inlineDiffBudget
	for si := range v.Sections {
		sec := &v.Sections[si]
		if len(sec.Files) > maxFilesShown {
			sec.More, sec.Files = len(sec.Files)-maxFilesShown, sec.Files[:maxFilesShown]
		}
		if len(sec.Lines) > maxLinesShown {
			sec.More, sec.Lines = len(sec.Lines)-maxLinesShown, sec.Lines[:maxLinesShown]
		}
		for fi := range sec.Files {
			f := &sec.Files[fi]
			if len(f.Diff) == 0 || left <= 0 {
				continue
			}
			f.Inline = true
			size := 0
			for i, l := range f.Diff {
				size += len(template.HTMLEscapeString(l)) + 26
				if size > inlineDiffPerFile || size > left {
					f.Diff, f.Clipped = f.Diff[:i], true
					break
				}
			}
			left -= size
		}
	}
}

func (v diffView) file(n int) *diffFile {
	for si := range v.Sections {
		for fi := range v.Sections[si].Files {
			if v.Sections[si].Files[fi].N == n {
				return &v.Sections[si].Files[fi]
			}
		}
	}
	return nil
}

// summaryRow is one non-zero count of Status.DiffSummary.
type summaryRow struct {
	Key   string
	Label string
	N     int
}

var summaryOrder = []string{"packages_installed", "packages_removed", "packages_upgraded", "files_added",
	"files_modified", "files_removed", "files_folded", "services_changed", "users_changed", "groups_changed",
	"cron_changed", "sysctl_changed", "ignored", "notes"}

func summaryRows(m map[string]int) []summaryRow {
	rank := map[string]int{}
	for i, k := range summaryOrder {
		rank[k] = i
	}
	var out []summaryRow
	for k, n := range m {
		if n != 0 {
			out = append(out, summaryRow{Key: k, Label: strings.ReplaceAll(k, "_", " "), N: n})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		ri, iok := rank[out[i].Key]
		rj, jok := rank[out[j].Key]
		if iok != jok {
			return iok
		}
		if ri != rj {
			return ri < rj
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// stepView is a step with its output cut to the page budget.
type stepView struct {
	workflows.StepRecord
	Shown   string
	Clipped bool
}

// stepViews keeps the last maxStepsShown steps (the count of the others
// is returned) and their output tails up to the page budget, newest first
// in the budget so that the latest output is visible.
func stepViews(steps []workflows.StepRecord) ([]stepView, int) {
	hidden := 0
	if len(steps) > maxStepsShown {
		hidden = len(steps) - maxStepsShown
		steps = steps[hidden:]
	}
	out := make([]stepView, len(steps))
	left := inlineStepBudget
	for i := len(steps) - 1; i >= 0; i-- {
		st := steps[i]
		st.Args, _ = clip(st.Args, stepArgsMax)
		v := stepView{StepRecord: st}
		v.Shown, v.Clipped = tail(st.Output, min(inlineStepPerStep, max(left, 0)))
		if v.Shown == "" && st.Output != "" {
			v.Clipped = true
		}
		left -= len(v.Shown)
		out[i] = v
	}
	return out, hidden
}

// phaseView is one timeline entry with how long the phase lasted.
type phaseView struct {
	Phase string
	At    time.Time
	Took  string
}

func timeline(marks []workflows.PhaseMark, closed time.Time) []phaseView {
	out := make([]phaseView, 0, len(marks))
	for i, m := range marks {
		v := phaseView{Phase: m.Phase, At: m.At}
		var end time.Time
		switch {
		case i+1 < len(marks):
			end = marks[i+1].At
		case !isFinal(m.Phase) && closed.IsZero():
			end = time.Now()
		}
		if !end.IsZero() {
			v.Took = end.Sub(m.At).Round(time.Second).String()
		}
		out = append(out, v)
	}
	return out
}

// eventView is an audit event with its data as short text.
type eventView struct {
	Event
	Text string `json:"text"`
}

func eventViews(evs []Event, limit, dataMax int) ([]eventView, int) {
	skipped := 0
	if limit > 0 && len(evs) > limit {
		skipped = len(evs) - limit
		evs = evs[skipped:]
	}
	out := make([]eventView, 0, len(evs))
	for _, e := range evs {
		out = append(out, eventView{Event: e, Text: eventText(e.Data, dataMax)})
	}
	return out, skipped
}

func eventText(data map[string]any, limit int) string {
	if len(data) == 0 {
		return ""
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v := data[k]
		var s string
		switch x := v.(type) {
		case string:
			s = x
		default:
			j, _ := json.Marshal(x)
			s = string(j)
		}
		if s == "" || s == "null" || s == `""` {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("  ")
		}
		b.WriteString(k + "=" + s)
	}
	s, cut := clip(b.String(), limit)
	if cut {
		s += " …"
	}
	return s
}
