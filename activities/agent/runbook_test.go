package agent

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRunbookReportsPositions(t *testing.T) {
	cases := map[string]struct {
		yaml       string
		line, col  int
		field, msg string
	}{
		"unknown field": {
			yaml: "steps:\n  - run: echo hi\n  - runn: oops\n", line: 3, field: "runn", msg: "not found",
		},
		"two actions in one step": {
			yaml: "steps:\n  - run: echo hi\n  - run: x\n    snapshot: y\n", line: 3, col: 5, field: "agent.steps[1]", msg: "exactly one of",
		},
		"relative path": {
			yaml: "steps:\n  - write_file:\n      path: etc/motd\n      content: hi\n", line: 2, col: 5, field: "agent.steps[0]", msg: "must be absolute",
		},
		"bad regexp": {
			yaml: "steps:\n  - run: echo\n    expect:\n      output: '(['\n", line: 2, col: 5, field: "agent.steps[0]", msg: "expect.output",
		},
		"not yaml": {
			yaml: "steps: [\n", line: 1, field: "(document)", msg: "",
		},
		"no steps": {
			yaml: "goal: x\n", line: 1, col: 1, field: "steps", msg: "at least one step",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRunbook("rb.yaml", []byte(tc.yaml))
			require.Error(t, err)
			var pe *PositionError
			require.True(t, errors.As(err, &pe), "want a PositionError, got %v", err)
			require.Equal(t, "rb.yaml", pe.File)
			require.Equal(t, tc.line, pe.Line, err.Error())
			if tc.col != 0 {
				require.Equal(t, tc.col, pe.Column, err.Error())
			}
			require.Equal(t, tc.field, pe.Field, err.Error())
			require.Contains(t, pe.Msg, tc.msg)
		})
	}
}

func TestParseRunbookAcceptsAllStepKinds(t *testing.T) {
	rb, err := ParseRunbook("ok.yaml", []byte(`
goal: demo
steps:
  - run: |
      cat <<'EOF2' > /tmp/x
      $HOME "quoted"
      EOF2
    expect: {exit_code: 0, output: ""}
  - write_file: {path: /etc/motd, content: "hi\n", mode: "0644"}
  - snapshot: before
  - restore: before
`))
	require.NoError(t, err)
	require.Len(t, rb.Steps, 4)
	require.Contains(t, rb.Steps[0].Run, `$HOME "quoted"`)
}

func TestParseTaskNamesTheField(t *testing.T) {
	_, err := ParseTask("task.yaml", []byte("goal: x\nsource: {image: bookworm}\nagent: {mode: runbook, steps: [{run: 'true'}]}\napproval: {approvers: [alice], expires_after: 3 days}\n"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "bad duration")

	_, err = ParseTask("task.yaml", []byte("goal: ''\nsource: {image: bookworm}\nagent: {mode: runbook, steps: [{run: 'true'}]}\napproval: {approvers: [alice]}\n"))
	var pe *PositionError
	require.True(t, errors.As(err, &pe))
	require.Equal(t, "goal", pe.Field)
	require.Equal(t, 1, pe.Line)

	in, err := ParseTask("task.yaml", []byte("goal: fix it\nsource: {image: bookworm}\nagent: {mode: runbook, steps: [{run: 'true'}]}\napproval: {approvers: [alice], expires_after: 48h}\n"))
	require.NoError(t, err)
	require.Equal(t, "48h0m0s", in.Approval.ExpiresAfter.D().String())
}
