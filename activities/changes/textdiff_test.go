package changes

import (
	"fmt"
	"math/rand"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var hunkHeader = regexp.MustCompile(`^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@$`)

// applyUnified applies a diff produced by UnifiedDiff to a, checking every
// context and deleted line and the hunk counts.
func applyUnified(t *testing.T, a, diff string) string {
	t.Helper()
	if diff == "" {
		return a
	}
	al := splitLines(a)
	dl := strings.SplitAfter(diff, "\n")
	require.True(t, strings.HasPrefix(dl[0], "--- ") && strings.HasPrefix(dl[1], "+++ "))
	var out []string
	pos := 0
	i := 2
	for i < len(dl) && dl[i] != "" {
		m := hunkHeader.FindStringSubmatch(strings.TrimSuffix(dl[i], "\n"))
		require.NotNil(t, m, "bad hunk header %q", dl[i])
		aStart, _ := strconv.Atoi(m[1])
		aLen, bLen := 1, 1
		if m[2] != "" {
			aLen, _ = strconv.Atoi(m[2])
		}
		if m[4] != "" {
			bLen, _ = strconv.Atoi(m[4])
		}
		start := aStart - 1
		if aLen == 0 {
			start = aStart
		}
		require.GreaterOrEqual(t, start, pos)
		out = append(out, al[pos:start]...)
		pos = start
		i++
		gotA, gotB := 0, 0
		for i < len(dl) && dl[i] != "" && !strings.HasPrefix(dl[i], "@@") {
			line := dl[i][1:]
			noEOL := i+1 < len(dl) && strings.HasPrefix(dl[i+1], `\ No newline`)
			if noEOL {
				line = strings.TrimSuffix(line, "\n")
			}
			switch dl[i][0] {
			case ' ':
				require.Equal(t, al[pos], line)
				out = append(out, line)
				pos++
				gotA++
				gotB++
			case '-':
				require.Equal(t, al[pos], line)
				pos++
				gotA++
			case '+':
				out = append(out, line)
				gotB++
			default:
				t.Fatalf("bad diff line %q", dl[i])
			}
			i++
			if noEOL {
				i++
			}
		}
		require.Equal(t, aLen, gotA, "hunk a length")
		require.Equal(t, bLen, gotB, "hunk b length")
	}
	out = append(out, al[pos:]...)
	return strings.Join(out, "")
}

func TestUnifiedDiffApplies(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	words := []string{"a\n", "b\n", "c\n", "d\n", "listen 80;\n", "}\n", "\n"}
	gen := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			b.WriteString(words[rng.Intn(len(words))])
		}
		s := b.String()
		if rng.Intn(4) == 0 {
			s = strings.TrimSuffix(s, "\n")
		}
		return s
	}
	for i := 0; i < 500; i++ {
		a, b := gen(rng.Intn(40)), gen(rng.Intn(40))
		if rng.Intn(2) == 0 { // small edit of a
			l := splitLines(a)
			if len(l) > 0 {
				j := rng.Intn(len(l))
				l[j] = "changed " + fmt.Sprint(i) + "\n"
			}
			b = strings.Join(l, "")
		}
		d := UnifiedDiff("a", "b", a, b)
		require.Equal(t, b, applyUnified(t, a, d), "case %d\n%s", i, d)
	}
}

func TestUnifiedDiffShape(t *testing.T) {
	var a, b []string
	for i := 0; i < 30; i++ {
		a = append(a, fmt.Sprintf("line %d\n", i))
	}
	b = append(b, a...)
	b[2] = "two\n"
	b[25] = "twenty-five\n"
	d := UnifiedDiff("a/f", "b/f", strings.Join(a, ""), strings.Join(b, ""))
	require.Equal(t, 2, strings.Count(d, "@@ -"), "far-apart edits make two hunks:\n%s", d)
	require.Contains(t, d, "@@ -1,6 +1,6 @@\n line 0\n line 1\n-line 2\n+two\n line 3\n")
	require.Contains(t, d, "@@ -23,7 +23,7 @@\n")

	d = UnifiedDiff("a", "b", "x\n", "x")
	require.Equal(t, "--- a\n+++ b\n@@ -1 +1 @@\n-x\n+x\n\\ No newline at end of file\n", d)

	// beyond the edit-distance bound the diff is still correct, just coarse
	big1, big2 := strings.Repeat("a\n", 3000), strings.Repeat("b\n", 3000)
	require.Equal(t, big2, applyUnified(t, big1, UnifiedDiff("a", "b", big1, big2)))
}
