package agent

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRunbookToolStepsParse(t *testing.T) {
	rb, err := ParseRunbook("tools.yaml", []byte(`
steps:
  - edit_file:
      path: /etc/nginx/nginx.conf
      op: replace
      old_text: "worker_processes auto;"
      new_text: "worker_processes 2;"
  - edit_file: {path: /etc/motd, op: append, content: "hello\n", mode: "0644", owner: root}
  - request_approval:
      question: Restart nginx now?
      options: [now, later]
      continue_on: now
  - request_egress:
      reason: install jq from Debian
      destinations: [deb.debian.org]
      minutes: 10
  - run: apt-get install -y jq
    expect: {exit_code: 0}
`))
	require.NoError(t, err)
	require.Len(t, rb.Steps, 5)
	require.Equal(t, "worker_processes 2;", *rb.Steps[0].EditFile.NewText)
	require.Equal(t, "append", rb.Steps[1].EditFile.Op)
	require.Equal(t, "now", rb.Steps[2].RequestApproval.ContinueOn)
	require.Equal(t, []string{"deb.debian.org"}, rb.Steps[3].RequestEgress.Destinations)
}

func TestRunbookToolStepsReportPositions(t *testing.T) {
	cases := map[string]struct {
		yaml      string
		line, col int
		field     string
		msg       string
	}{
		"edit without content": {
			yaml: "steps:\n  - run: 'true'\n  - edit_file:\n      path: /etc/motd\n      op: write\n", line: 4, col: 7, field: "agent.steps[1].edit_file", msg: `needs "content"`,
		},
		"edit bad mode": {
			yaml: "steps:\n  - edit_file: {path: /etc/motd, op: write, content: x, mode: rwx}\n", line: 2, col: 16, field: "agent.steps[0].edit_file", msg: "octal",
		},
		"edit unknown field": {
			yaml: "steps:\n  - edit_file: {path: /etc/motd, op: write, text: x}\n", line: 2, field: "text", msg: "not found",
		},
		"continue_on not an option": {
			yaml: "steps:\n  - request_approval:\n      question: ok?\n      options: [a, b]\n      continue_on: c\n", line: 5, col: 20, field: "agent.steps[0].request_approval.continue_on", msg: "not one of",
		},
		"egress without destinations": {
			yaml: "steps:\n  - request_egress: {reason: apt}\n", line: 2, col: 21, field: "agent.steps[0].request_egress", msg: "destinations",
		},
		"egress for another sandbox": {
			yaml: "steps:\n  - request_egress: {reason: apt, destinations: [x], sandbox: sbx-other}\n", line: 2, field: "agent.steps[0].request_egress.sandbox", msg: "remove sandbox",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRunbook("rb.yaml", []byte(tc.yaml))
			var pe *PositionError
			require.True(t, errors.As(err, &pe), "want a PositionError, got %v", err)
			require.Equal(t, tc.line, pe.Line, err.Error())
			if tc.col != 0 {
				require.Equal(t, tc.col, pe.Column, err.Error())
			}
			require.Equal(t, tc.field, pe.Field, err.Error())
			require.Contains(t, pe.Msg, tc.msg)
			require.Contains(t, err.Error(), "rb.yaml:")
		})
	}
}
