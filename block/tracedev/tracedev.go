package tracedev

import (
	"bytes"
	"fmt"
	"strings"
	"sync"

	"github.com/qring/qring/block"
)

// Kind is the kind of a recorded op.
type Kind uint8

const (
	Read Kind = iota
	Write
	Zero
	Flush
	Truncate
)

var kindNames = [...]string{"read", "write", "zero", "flush", "truncate"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Entry is one recorded op.
type Entry struct {
	Kind  Kind
	Off   int64 // for Truncate: the new size
	Len   int64
	Flags block.Flags // WriteZeroes flags
	Zeros bool        // Write only: every byte was zero
	Err   error
}

// Options configure a Dev.
type Options struct {
	// OmitReads drops reads from the log (metadata-order traces rarely
	// care about them).
	OmitReads bool
	// ClusterSize, if > 0, prints ranges as cluster indices.
	ClusterSize int64
}

// Dev logs every op on its child.
type Dev struct {
	child block.Device
	opts  Options
	mu    sync.Mutex
	log   []Entry
}

var (
	_ block.Device     = (*Dev)(nil)
	_ block.ZeroWriter = (*Dev)(nil)
)

// New wraps child.
func New(child block.Device, o Options) *Dev { return &Dev{child: child, opts: o} }

// Unwrap returns the child device.
func (d *Dev) Unwrap() block.Device { return d.child }

func (d *Dev) record(e Entry) {
	if e.Kind == Read && d.opts.OmitReads {
		return
	}
	d.mu.Lock()
	d.log = append(d.log, e)
	d.mu.Unlock()
}

// Entries returns a copy of the log.
func (d *Dev) Entries() []Entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Entry(nil), d.log...)
}

// Len is the number of recorded ops.
func (d *Dev) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.log)
}

// Reset clears the log, e.g. after image creation so a trace shows only
// the operation under test.
func (d *Dev) Reset() {
	d.mu.Lock()
	d.log = d.log[:0]
	d.mu.Unlock()
}

// String renders the log, one op per line, each line ending in "\n".
func (d *Dev) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var sb strings.Builder
	for _, e := range d.log {
		sb.WriteString(d.Format(e))
		sb.WriteByte('\n')
	}
	return sb.String()
}

// Format renders one entry as String does.
func (d *Dev) Format(e Entry) string {
	var sb strings.Builder
	sb.WriteString(e.Kind.String())
	switch e.Kind {
	case Flush:
	case Truncate:
		fmt.Fprintf(&sb, " 0x%x", e.Off)
	default:
		sb.WriteByte(' ')
		sb.WriteString(d.rangeString(e.Off, e.Len))
	}
	switch {
	case e.Kind == Write && e.Zeros:
		sb.WriteString(" zeros")
	case e.Kind == Write:
		sb.WriteString(" data")
	case e.Kind == Zero && e.Flags != 0:
		sb.WriteByte(' ')
		sb.WriteString(e.Flags.String())
	}
	if e.Err != nil {
		fmt.Fprintf(&sb, " err=%v", e.Err)
	}
	return sb.String()
}

func (d *Dev) rangeString(off, n int64) string {
	cs := d.opts.ClusterSize
	if cs <= 0 {
		return fmt.Sprintf("0x%x+0x%x", off, n)
	}
	c, rem := off/cs, off%cs
	switch {
	case rem == 0 && n == cs:
		return fmt.Sprintf("c%d", c)
	case rem == 0 && n > 0 && n%cs == 0:
		return fmt.Sprintf("c%d-c%d", c, c+n/cs-1)
	default:
		return fmt.Sprintf("c%d+0x%x:0x%x", c, rem, n)
	}
}

// allZero reports whether every byte of bufs is zero, comparing against
// the shared zero page in chunks (memequal is far faster than a byte loop).
func allZero(bufs [][]byte) bool {
	z := block.ZeroBuf()
	for _, b := range bufs {
		for len(b) > 0 {
			k := min(len(b), len(z))
			if !bytes.Equal(b[:k], z[:k]) {
				return false
			}
			b = b[k:]
		}
	}
	return true
}

func (d *Dev) Readv(off int64, bufs [][]byte) error {
	err := d.child.Readv(off, bufs)
	d.record(Entry{Kind: Read, Off: off, Len: block.VecLen(bufs), Err: err})
	return err
}

func (d *Dev) Writev(off int64, bufs [][]byte) error {
	// Classify before the call: the caller may reuse bufs once we return.
	zeros := allZero(bufs)
	err := d.child.Writev(off, bufs)
	d.record(Entry{Kind: Write, Off: off, Len: block.VecLen(bufs), Zeros: zeros, Err: err})
	return err
}

func (d *Dev) WriteZeroes(off, n int64, flags block.Flags) error {
	err := d.child.WriteZeroes(off, n, flags)
	d.record(Entry{Kind: Zero, Off: off, Len: n, Flags: flags, Err: err})
	return err
}

// ZeroThenWritev delegates to the child's ZeroThenWritev if it has one,
// else zeroes then writes; either way it records a zero then a write (T2).
func (d *Dev) ZeroThenWritev(zoff, zn int64, zflags block.Flags, woff int64, bufs [][]byte) error {
	zeros := allZero(bufs)
	wlen := block.VecLen(bufs)
	if zw, ok := d.child.(block.ZeroWriter); ok {
		err := zw.ZeroThenWritev(zoff, zn, zflags, woff, bufs)
		d.mu.Lock()
		// Without the child's cooperation we cannot tell which half failed;
		// the error is recorded on both.
		d.log = append(d.log,
			Entry{Kind: Zero, Off: zoff, Len: zn, Flags: zflags, Err: err},
			Entry{Kind: Write, Off: woff, Len: wlen, Zeros: zeros, Err: err})
		d.mu.Unlock()
		return err
	}
	if err := d.WriteZeroes(zoff, zn, zflags); err != nil {
		return err
	}
	return d.Writev(woff, bufs)
}

func (d *Dev) Flush() error {
	err := d.child.Flush()
	d.record(Entry{Kind: Flush, Err: err})
	return err
}

func (d *Dev) Truncate(size int64) error {
	err := d.child.Truncate(size)
	d.record(Entry{Kind: Truncate, Off: size, Err: err})
	return err
}

func (d *Dev) Size() (int64, error) { return d.child.Size() }
func (d *Dev) Caps() block.Caps     { return d.child.Caps() }
func (d *Dev) Close() error         { return d.child.Close() }
