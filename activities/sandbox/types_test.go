package sandbox

import (
	"errors"
	"strings"
	"testing"
)

func TestNameFor(t *testing.T) {
	cases := []struct{ owner, suffix, want string }{
		{"task-01HZX3", "", "sbx-task-01hzx3"},
		{"pd-P1234/ABC", "", "sbx-pd-p1234-abc"},
		{"am-0f3a_b.c", "", "sbx-am-0f3a-b-c"},
		{"task-01HZX3", "v2", "sbx-task-01hzx3-v2"},
		{"Ünïcode", "", "sbx--n-code"},
	}
	for _, c := range cases {
		if got := NameFor(c.owner, c.suffix); got != c.want {
			t.Errorf("NameFor(%q, %q) = %q, want %q", c.owner, c.suffix, got, c.want)
		}
	}
	long := NameFor(strings.Repeat("a", 100), "")
	if len(long) != 63 {
		t.Errorf("long name has %d chars, want 63 (hostname limit)", len(long))
	}
}

func TestCapacityError(t *testing.T) {
	var err error = &CapacityError{WantMiB: 512, FreeMiB: 100, Reason: "2 of 2 sandboxes in use"}
	if !errors.Is(err, ErrNoCapacity) {
		t.Fatal("CapacityError must unwrap to ErrNoCapacity")
	}
	if got, want := err.Error(), "not enough capacity: want 512 MiB, 100 MiB free (2 of 2 sandboxes in use)"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(ErrSnapshotAbsent, ErrBadInput) || !errors.Is(ErrOwnedByOther, ErrBadInput) || !errors.Is(ErrUnknownImage, ErrBadInput) {
		t.Fatal("bad-input errors must wrap ErrBadInput")
	}
}
