package remote_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/remote/remotetest"
)

func TestExec(t *testing.T) {
	ctx := context.Background()

	t.Run("Heredoc", func(t *testing.T) {
		client, _ := setup(t)
		res := run(t, client, "cat <<'EOF'\nliteral $HOME `x` \"q\"\nEOF\ncat <<EOF\nexpanded $((6*7))\nEOF\n")
		require.Equal(t, "literal $HOME `x` \"q\"\nexpanded 42\n", res.Stdout.String())
		require.Zero(t, res.ExitCode)
	})

	t.Run("VariablesAndLoops", func(t *testing.T) {
		client, _ := setup(t)
		res := run(t, client, `name=world
for i in 1 2 3; do echo "$i $name"; done
n=0; while [ $n -lt 2 ]; do n=$((n+1)); done; echo "n=$n"
echo "user=$(id -un) pid-set=${BASHPID:+yes}"`)
		require.Equal(t, "1 world\n2 world\n3 world\nn=2\nuser=root pid-set=yes\n", res.Stdout.String())
	})

	t.Run("Quotes", func(t *testing.T) {
		client, _ := setup(t)
		script := `printf '%s\n' 'single "double" $not' "double 'single' \$not" it\'s`
		res := run(t, client, script)
		require.Equal(t, "single \"double\" $not\ndouble 'single' $not\nit's\n", res.Stdout.String())
	})

	t.Run("Unicode", func(t *testing.T) {
		client, _ := setup(t)
		text := "héllo wörld ✓ 日本語 🚀"
		res := run(t, client, "echo '"+text+"'\nv='"+text+"'; echo ${#v} >&2")
		require.Equal(t, text+"\n", res.Stdout.String())
		require.Equal(t, []byte(text+"\n"), res.Stdout.Head)
	})

	t.Run("BinaryOutput", func(t *testing.T) {
		client, _ := setup(t)
		res := run(t, client, `f=$(mktemp); head -c 4096 /dev/urandom > "$f"; cat "$f"; sha256sum "$f" | cut -d' ' -f1 >&2; rm -f "$f"
printf '\000\001\377'`)
		require.EqualValues(t, 4099, res.Stdout.Total)
		require.False(t, res.Stdout.Truncated)
		out := append(append([]byte(nil), res.Stdout.Head...), res.Stdout.Tail...)
		require.Equal(t, []byte{0, 1, 0xff}, out[4096:])
		sum := sha256.Sum256(out[:4096])
		require.Equal(t, hex.EncodeToString(sum[:])+"\n", res.Stderr.String())
	})

	t.Run("ExitCodesAndStderr", func(t *testing.T) {
		client, _ := setup(t)
		res := run(t, client, "echo out; echo err >&2; exit 7")
		require.Equal(t, 7, res.ExitCode)
		require.Equal(t, "out\n", res.Stdout.String())
		require.Equal(t, "err\n", res.Stderr.String())
		require.Positive(t, res.Duration)

		res = run(t, client, "false")
		require.Equal(t, 1, res.ExitCode)

		res = run(t, client, "no-such-command-xyz")
		require.Equal(t, 127, res.ExitCode)
		require.Contains(t, res.Stderr.String(), "no-such-command-xyz")

		res = run(t, client, "kill -TERM $$")
		require.Equal(t, "TERM", res.Signal)
	})

	t.Run("CommandsDoNotReadTheScript", func(t *testing.T) {
		client, _ := setup(t)
		// Under a plain `bash -s`, read and cat would consume the lines after them.
		res := run(t, client, "read x || echo eof\ncat\necho after")
		require.Equal(t, "eof\nafter\n", res.Stdout.String())
	})

	t.Run("LargeScript", func(t *testing.T) {
		client, _ := setup(t)
		var script strings.Builder
		for i := range 20000 {
			fmt.Fprintf(&script, "x%d=%d\n", i, i)
		}
		script.WriteString("echo $x19999\n")
		res := run(t, client, script.String())
		require.Equal(t, "19999\n", res.Stdout.String())
	})

	t.Run("Sinks", func(t *testing.T) {
		client, _ := setup(t)
		var combined bytes.Buffer
		res, err := client.Exec(ctx, "for i in $(seq 1 2000); do echo out$i; echo err$i >&2; done",
			remote.ExecOptions{OutputCap: 100, Stdout: &combined, Stderr: &combined})
		require.NoError(t, err)
		require.True(t, res.Stdout.Truncated)
		require.Len(t, res.Stdout.Head, 50)
		require.Len(t, res.Stdout.Tail, 50)
		require.True(t, strings.HasPrefix(string(res.Stdout.Head), "out1\nout2\n"))
		require.True(t, strings.HasSuffix(string(res.Stdout.Tail), "out1999\nout2000\n"))
		require.Contains(t, res.Stdout.String(), "bytes omitted")
		require.Equal(t, res.Stdout.Total+res.Stderr.Total, int64(combined.Len()))
		require.Contains(t, combined.String(), "out1000\n")
		require.Contains(t, combined.String(), "err1000\n")
	})

	t.Run("SinkErrorDoesNotStopCommand", func(t *testing.T) {
		client, _ := setup(t)
		res, err := client.Exec(ctx, "head -c 1000000 /dev/zero; echo done >&2",
			remote.ExecOptions{Stdout: failingWriter{}})
		require.ErrorContains(t, err, "output sink")
		require.Zero(t, res.ExitCode)
		require.EqualValues(t, 1000000, res.Stdout.Total)
		require.Equal(t, "done\n", res.Stderr.String())
	})

	t.Run("ConcurrentExecsBeyondSessionLimit", func(t *testing.T) {
		client, _ := setup(t)
		const n = 14 // more than OpenSSH's MaxSessions (10)
		var wg sync.WaitGroup
		errs := make([]error, n)
		outs := make([]string, n)
		for i := range n {
			wg.Go(func() {
				res, err := client.Exec(ctx, fmt.Sprintf("echo %d", i), remote.ExecOptions{})
				errs[i], outs[i] = err, res.Stdout.String()
			})
		}
		wg.Wait()
		for i := range n {
			require.NoError(t, errs[i])
			require.Equal(t, fmt.Sprintf("%d\n", i), outs[i])
		}
	})
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestExecTimeout(t *testing.T) {
	t.Run("KillsCommandAndChildren", func(t *testing.T) {
		client, _ := setup(t)
		// A marker argument identifies the processes; sleep 30 in the
		// foreground and a background child both must die.
		res, err := client.Exec(context.Background(),
			"sleep 30.0417 & echo started; sleep 30.0417; echo never",
			remote.ExecOptions{Timeout: time.Second})
		require.ErrorIs(t, err, remote.ErrTimeout)
		require.Equal(t, -1, res.ExitCode)
		require.Equal(t, "started\n", res.Stdout.String())

		check := run(t, client, "pgrep -f 'sleep 30[.]0417' || echo none")
		require.Equal(t, "none\n", check.Stdout.String())
	})

	t.Run("ContextCancel", func(t *testing.T) {
		client, _ := setup(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// Cancel as soon as the command has demonstrably started.
		sink := writerFunc(func(p []byte) {
			if bytes.Contains(p, []byte("ready")) {
				cancel()
			}
		})
		_, err := client.Exec(ctx, "echo ready; sleep 30.0418", remote.ExecOptions{Stdout: sink})
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, remote.ErrTimeout)

		check := run(t, client, "pgrep -f 'sleep 30[.]0418' || echo none")
		require.Equal(t, "none\n", check.Stdout.String())
	})
}

// TestExecMarkerWithoutAcceptEnv: a host whose sshd does not accept the
// marker as an environment request still gets it (through env), so a
// timed-out command is still found and killed.
func TestExecMarkerWithoutAcceptEnv(t *testing.T) {
	for _, noAcceptEnv := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoAcceptEnv=%v", noAcceptEnv), func(t *testing.T) {
			cas := newCAs(t)
			srv := remotetest.Start(t, remotetest.Config{CAs: cas, Principal: "sbx-test", NoAcceptEnv: noAcceptEnv})
			client, err := (&remote.Dialer{CAs: cas}).Dial(context.Background(), remote.Target{Name: srv.Principal, Addr: srv.Addr})
			require.NoError(t, err, "sshd log:\n%s", srv.Log())
			t.Cleanup(func() { client.Close() })

			res := run(t, client, `printf '%s' "${AIRLOCK_EXEC_ID:-unset}"`)
			require.Regexp(t, `^[0-9a-f]{8,}$`, res.Stdout.String())

			_, err = client.Exec(context.Background(), "sleep 30.0419 & sleep 30.0419", remote.ExecOptions{Timeout: time.Second})
			require.ErrorIs(t, err, remote.ErrTimeout)
			check := run(t, client, "pgrep -f 'sleep 30[.]0419' || echo none")
			require.Equal(t, "none\n", check.Stdout.String())
		})
	}
}

func TestProbe(t *testing.T) {
	client, _ := setup(t)
	require.NoError(t, client.Probe(context.Background(), 10*time.Second))
	require.NoError(t, client.Close())
	require.Error(t, client.Probe(context.Background(), 2*time.Second), "closed connection")
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

// memorySampler is an output sink that counts bytes and records the peak
// Go heap seen while output streams through.
type memorySampler struct {
	total, nextSample int64
	peakHeap          uint64
}

func (m *memorySampler) Write(p []byte) (int, error) {
	m.total += int64(len(p))
	if m.total >= m.nextSample {
		m.nextSample = m.total + 1<<20
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		m.peakHeap = max(m.peakHeap, ms.HeapAlloc)
	}
	return len(p), nil
}

func TestExecOutputFloodIsBounded(t *testing.T) {
	client, _ := setup(t)
	const capacity = 64 << 10

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	sink := &memorySampler{}
	res, err := client.Exec(context.Background(),
		"echo START; head -c 50M /dev/urandom | base64; echo END",
		remote.ExecOptions{OutputCap: capacity, Stdout: sink})
	require.NoError(t, err)
	require.Zero(t, res.ExitCode)

	// base64 of 50 MiB: 4 chars per 3 bytes, wrapped at 76 columns.
	const raw = 50 << 20
	chars := int64(4 * ((raw + 2) / 3))
	want := int64(len("START\n")) + chars + (chars+75)/76 + int64(len("END\n"))
	require.Equal(t, want, res.Stdout.Total)
	require.Equal(t, want, sink.total)
	require.True(t, res.Stdout.Truncated)
	require.Len(t, res.Stdout.Head, capacity/2)
	require.Len(t, res.Stdout.Tail, capacity/2)
	require.Equal(t, want-capacity, res.Stdout.Omitted())
	require.True(t, bytes.HasPrefix(res.Stdout.Head, []byte("START\n")))
	require.True(t, bytes.HasSuffix(res.Stdout.Tail, []byte("\nEND\n")))

	growth := int64(sink.peakHeap) - int64(before.HeapAlloc)
	t.Logf("output %d bytes; heap before %d MiB, peak %d MiB, growth %d MiB",
		res.Stdout.Total, before.HeapAlloc>>20, sink.peakHeap>>20, growth>>20)
	require.Less(t, growth, int64(16<<20), "heap grew by %d bytes for %d bytes of output", growth, res.Stdout.Total)
}
