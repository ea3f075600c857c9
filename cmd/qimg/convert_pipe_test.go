package main

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/block/tracedev"
	"github.com/qring/qring/internal/imgopen"
)

// convert reads ahead of its writes (pipeWalk) but fails as a serial
// copy does: the first error in the walk's order wins, everything before
// it is written and nothing after it, nothing is read past a failed
// read, and the reader goroutine is gone when convertImage returns.
func TestConvert_PipelineErrorsInOrder(t *testing.T) {
	const size, mib = 16 << 20, 1 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i>>12) | 1 // no zeros: every chunk is written
	}
	for _, c := range []struct {
		name            string
		readAt, writeAt int64 // -1: no fault
		want            string
		writtenTo       int64 // the output's bytes below it are the source's, none above
	}{
		{"read", 9 * mib, -1, "error while reading at byte 8388608", 8 * mib},
		{"write", -1, 4 * mib, "error while writing at byte 4194304", 4 * mib},
		{"write before read", 9 * mib, 4 * mib, "error while writing at byte 4194304", 4 * mib},
		{"read before write", 3 * mib, 8 * mib, "error while reading at byte 2097152", 2 * mib},
		{"none", -1, -1, "", size},
	} {
		t.Run(c.name, func(t *testing.T) {
			fault := func(at int64, op errordev.Op) errordev.Injector {
				return errordev.InjectorFunc(func(o errordev.Op, off, n int64) error {
					if at >= 0 && o == op && off <= at && at < off+n {
						return errordev.ErrInjectedEIO
					}
					return nil
				})
			}
			srcDev := tracedev.New(errordev.New(memdev.FromBytes(data, memdev.Options{}), fault(c.readAt, errordev.Read), errordev.Options{}), tracedev.Options{})
			img, err := loadImage(&imgopen.Opened{Dev: srcDev})
			if err != nil {
				t.Fatal(err)
			}
			out := memdev.FromBytes(make([]byte, size), memdev.Options{})
			dst := convertOut{dev: errordev.New(out, fault(c.writeAt, errordev.Write), errordev.Options{}), align: 512, zeroInit: true}
			g0 := runtime.NumGoroutine()
			err = convertImage(newConvertSrc([]*image{img}), dst, 4096, nil)
			switch {
			case c.want == "" && err != nil:
				t.Fatal(err)
			case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.Is(err, errordev.ErrInjected)):
				t.Fatalf("convert: %v, want %q", err, c.want)
			}
			got := out.Bytes()
			if string(got[:c.writtenTo]) != string(data[:c.writtenTo]) || !isZero(got[c.writtenTo:]) {
				t.Errorf("the output is not the source's first %d bytes alone", c.writtenTo)
			}
			if c.readAt >= 0 {
				for _, e := range srcDev.Entries() {
					if e.Kind == tracedev.Read && e.Off > c.readAt {
						t.Errorf("read at %#x, past the failed read at %#x", e.Off, c.readAt)
					}
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for runtime.NumGoroutine() > g0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if n := runtime.NumGoroutine(); n > g0 {
				t.Errorf("%d goroutines after convert, %d before", n, g0)
			}
		})
	}
}
