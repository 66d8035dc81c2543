package changes

import (
	"fmt"
	"strings"
)

// maxEditDistance bounds the Myers search (memory is quadratic in it).
// Files that differ in more lines get one hunk replacing the whole middle.
const maxEditDistance = 2000

type opKind byte

const (
	opEqual opKind = iota
	opDelete
	opInsert
)

type edit struct {
	kind opKind
	a, b int // line index in a (equal, delete) and b (equal, insert)
}

// splitLines splits s keeping each line's "\n"; a last line without one is
// returned as is.
func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			out = append(out, s)
			break
		}
		out = append(out, s[:i+1])
		s = s[i+1:]
	}
	return out
}

// myers returns the shortest edit script from a to b (Myers 1986), after
// trimming a common prefix and suffix.
func myers(a, b []string) []edit {
	var pre []edit
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		pre = append(pre, edit{opEqual, p, p})
		p++
	}
	s := 0
	for s < len(a)-p && s < len(b)-p && a[len(a)-1-s] == b[len(b)-1-s] {
		s++
	}
	mid := myersCore(a[p:len(a)-s], b[p:len(b)-s])
	out := pre
	for _, e := range mid {
		out = append(out, edit{e.kind, e.a + p, e.b + p})
	}
	for i := 0; i < s; i++ {
		out = append(out, edit{opEqual, len(a) - s + i, len(b) - s + i})
	}
	return out
}

func myersCore(a, b []string) []edit {
	n, m := len(a), len(b)
	max := min(n+m, maxEditDistance)
	off := max + 1
	v := make([]int, 2*max+3)
	var trace [][]int
	found := -1
	for d := 0; d <= max && found < 0; d++ {
		snap := make([]int, 2*d+3)
		copy(snap, v[off-d-1:off+d+2])
		trace = append(trace, snap)
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = v[off+k+1]
			} else {
				x = v[off+k-1] + 1
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			v[off+k] = x
			if x >= n && y >= m {
				found = d
				break
			}
		}
	}
	if found < 0 { // too different: delete everything, insert everything
		var out []edit
		for i := range a {
			out = append(out, edit{opDelete, i, 0})
		}
		for j := range b {
			out = append(out, edit{opInsert, n, j})
		}
		return out
	}
	// Backtrack. trace[d] holds v as it was before round d, for k in [-d-1, d+1].
	var rev []edit
	x, y := n, m
	for d := found; d > 0; d-- {
		prev := trace[d] // v before round d == after round d-1
		get := func(k int) int { return prev[k+d+1] }
		k := x - y
		var pk int
		if k == -d || (k != d && get(k-1) < get(k+1)) {
			pk = k + 1
		} else {
			pk = k - 1
		}
		px := get(pk)
		py := px - pk
		for x > px && y > py {
			x--
			y--
			rev = append(rev, edit{opEqual, x, y})
		}
		if x == px {
			y--
			rev = append(rev, edit{opInsert, x, y})
		} else {
			x--
			rev = append(rev, edit{opDelete, x, y})
		}
	}
	for x > 0 && y > 0 {
		x--
		y--
		rev = append(rev, edit{opEqual, x, y})
	}
	out := make([]edit, len(rev))
	for i := range rev {
		out[i] = rev[len(rev)-1-i]
	}
	return out
}

// UnifiedDiff renders a unified diff (like `diff -u`) of two texts with
// three lines of context. It returns "" when they are equal.
func UnifiedDiff(aName, bName, a, b string) string {
	if a == b {
		return ""
	}
	al, bl := splitLines(a), splitLines(b)
	edits := myers(al, bl)
	const ctx = 3
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", aName, bName)
	for i := 0; i < len(edits); {
		if edits[i].kind == opEqual {
			i++
			continue
		}
		start := i - ctx
		if start < 0 {
			start = 0
		}
		end := i
		for end < len(edits) {
			if edits[end].kind != opEqual {
				end++
				continue
			}
			run := end
			for run < len(edits) && edits[run].kind == opEqual {
				run++
			}
			if run == len(edits) || run-end > 2*ctx {
				end += min(ctx, run-end)
				break
			}
			end = run
		}
		writeHunk(&sb, edits[start:end], al, bl)
		i = end
	}
	return sb.String()
}

func writeHunk(sb *strings.Builder, h []edit, al, bl []string) {
	aStart, bStart, aLen, bLen := -1, -1, 0, 0
	for _, e := range h {
		if e.kind != opInsert {
			if aStart < 0 {
				aStart = e.a
			}
			aLen++
		}
		if e.kind != opDelete {
			if bStart < 0 {
				bStart = e.b
			}
			bLen++
		}
	}
	// For an empty side, diff -u names the line before the hunk.
	if aStart < 0 {
		aStart = h[0].a - 1
	}
	if bStart < 0 {
		bStart = h[0].b - 1
	}
	fmt.Fprintf(sb, "@@ -%s +%s @@\n", hunkRange(aStart, aLen), hunkRange(bStart, bLen))
	for _, e := range h {
		switch e.kind {
		case opEqual:
			writeLine(sb, ' ', al[e.a])
		case opDelete:
			writeLine(sb, '-', al[e.a])
		case opInsert:
			writeLine(sb, '+', bl[e.b])
		}
	}
}

func hunkRange(start, n int) string {
	if n == 1 {
		return fmt.Sprint(start + 1)
	}
	if n == 0 {
		return fmt.Sprintf("%d,0", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, n)
}

func writeLine(sb *strings.Builder, prefix byte, line string) {
	sb.WriteByte(prefix)
	sb.WriteString(line)
	if !strings.HasSuffix(line, "\n") {
		sb.WriteString("\n\\ No newline at end of file\n")
	}
}
