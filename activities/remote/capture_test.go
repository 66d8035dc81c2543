package remote

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHeadTail compares the bounded buffer with keeping everything, over
// random chunkings and capacities.
func TestHeadTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 500 {
		capacity := rng.IntN(64)
		size := rng.IntN(300)
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		b := newHeadTail(capacity)
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(40))
			b.write(rest[:n])
			rest = rest[n:]
		}
		out := b.output()

		headMax, tailMax := capacity/2, capacity-capacity/2
		wantHead := data[:min(size, headMax)]
		wantTail := data[len(wantHead):]
		if len(wantTail) > tailMax {
			wantTail = wantTail[len(wantTail)-tailMax:]
		}
		require.Equal(t, string(wantHead), string(out.Head), "round %d head", round)
		require.Equal(t, string(wantTail), string(out.Tail), "round %d tail (cap %d, size %d)", round, capacity, size)
		require.EqualValues(t, size, out.Total)
		require.Equal(t, size > capacity, out.Truncated)
		require.EqualValues(t, size-len(wantHead)-len(wantTail), out.Omitted())
		if !out.Truncated {
			require.Equal(t, string(data), out.String())
		}
	}
}

func TestOutputString(t *testing.T) {
	o := Output{Head: []byte("ab"), Tail: []byte("yz"), Total: 10, Truncated: true}
	require.Equal(t, "ab\n[... 6 bytes omitted ...]\nyz", o.String())
}
