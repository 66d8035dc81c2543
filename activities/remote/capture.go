package remote

import (
	"fmt"
	"io"
	"sync"
)

// Output is one stream of a command's output, captured with bounded memory:
// the first and the last bytes are kept, the middle is counted and dropped.
type Output struct {
	// Head holds the first bytes. When Truncated is false, Head followed
	// by Tail is the complete output.
	Head []byte
	// Tail holds the last bytes.
	Tail []byte
	// Total is how many bytes the stream produced.
	Total int64
	// Truncated reports that bytes between Head and Tail were dropped.
	Truncated bool
}

// Omitted is the number of bytes dropped between Head and Tail.
func (o Output) Omitted() int64 { return o.Total - int64(len(o.Head)) - int64(len(o.Tail)) }

// String renders the output as text, marking the omitted middle.
func (o Output) String() string {
	if !o.Truncated {
		return string(o.Head) + string(o.Tail)
	}
	return fmt.Sprintf("%s\n[... %d bytes omitted ...]\n%s", o.Head, o.Omitted(), o.Tail)
}

// headTail keeps the first headMax and the last tailMax bytes written to it
// in buffers that never grow beyond those sizes.
type headTail struct {
	headMax, tailMax int
	head             []byte
	tail             []byte // ring once full
	pos              int    // when full: index of the oldest byte in tail
	full             bool
	total            int64
}

func newHeadTail(capacity int) *headTail {
	h := capacity / 2
	return &headTail{headMax: h, tailMax: capacity - h}
}

func (b *headTail) write(p []byte) {
	b.total += int64(len(p))
	if n := b.headMax - len(b.head); n > 0 {
		k := min(n, len(p))
		b.head = append(b.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 || b.tailMax == 0 {
		return
	}
	if len(p) >= b.tailMax {
		if b.tail == nil {
			b.tail = make([]byte, 0, b.tailMax)
		}
		b.tail = append(b.tail[:0], p[len(p)-b.tailMax:]...)
		b.pos, b.full = 0, true
		return
	}
	if !b.full {
		if b.tail == nil {
			b.tail = make([]byte, 0, min(b.tailMax, 4096))
		}
		space := b.tailMax - len(b.tail)
		k := min(space, len(p))
		b.tail = append(b.tail, p[:k]...)
		p = p[k:]
		if len(b.tail) == b.tailMax {
			b.full, b.pos = true, 0
		}
	}
	for len(p) > 0 {
		n := copy(b.tail[b.pos:], p)
		p = p[n:]
		b.pos = (b.pos + n) % b.tailMax
	}
}

func (b *headTail) output() Output {
	o := Output{Head: append([]byte(nil), b.head...), Total: b.total}
	if b.full {
		o.Tail = make([]byte, 0, b.tailMax)
		o.Tail = append(o.Tail, b.tail[b.pos:]...)
		o.Tail = append(o.Tail, b.tail[:b.pos]...)
	} else {
		o.Tail = append([]byte(nil), b.tail...)
	}
	o.Truncated = o.Total > int64(len(o.Head)+len(o.Tail))
	return o
}

// execCapture collects stdout and stderr of one command and forwards them
// to the caller's sinks. Its writers never fail: a failing sink is noted
// and skipped, because an error returned to the SSH copy loop would stop
// reading and stall the remote command. Writes are serialised so one sink
// may serve both streams; after seal nothing more is written.
type execCapture struct {
	mu             sync.Mutex
	stdout, stderr *headTail
	outSink        io.Writer
	errSink        io.Writer
	sinkErr        error
	sealed         bool
}

func newExecCapture(capacity int, stdout, stderr io.Writer) *execCapture {
	return &execCapture{
		stdout: newHeadTail(capacity), stderr: newHeadTail(capacity),
		outSink: stdout, errSink: stderr,
	}
}

type streamWriter struct {
	c      *execCapture
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sealed {
		return len(p), nil
	}
	buf, sink := c.stdout, c.outSink
	if w.stderr {
		buf, sink = c.stderr, c.errSink
	}
	buf.write(p)
	if sink != nil && c.sinkErr == nil {
		if _, err := sink.Write(p); err != nil {
			c.sinkErr = err
		}
	}
	return len(p), nil
}

// seal stops all further writes and returns what was captured.
func (c *execCapture) seal() (stdout, stderr Output, sinkErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sealed = true
	return c.stdout.output(), c.stderr.output(), c.sinkErr
}

// limitedBuffer keeps at most max bytes and counts the rest.
type limitedBuffer struct {
	mu    sync.Mutex
	max   int64
	buf   []byte
	total int64
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total += int64(len(p))
	if room := b.max - int64(len(b.buf)); room > 0 {
		b.buf = append(b.buf, p[:min(int64(len(p)), room)]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) bytes() ([]byte, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...), b.total
}
