package main

import (
	"errors"
	"strings"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
)

// qemuErrnoText is msg, a message made of a, as QEMU words a failed
// request: its steps name what failed and the errno in strerror's
// words, never the request. The text of a step that failed
// (qcow2.StepError: "qcow2: Failed to grow the L1 table: write
// [0x80000, +0x640): no space left on device") becomes QEMU's ("Failed
// to grow the L1 table: No space left on device"), and so does that of a
// device request that failed with an errno (block.OpError: "No space
// left on device").
func qemuErrnoText(msg string, a []any) string {
	for _, x := range a {
		err, ok := x.(error)
		if !ok {
			continue
		}
		var oe *block.OpError
		if !errors.As(err, &oe) {
			continue
		}
		en, ok := oe.Err.(syscall.Errno)
		if !ok {
			continue // an injected fault, a failed flush: as they are
		}
		errno := (&capitalized{err: en}).Error()
		var se *qcow2.StepError
		if errors.As(err, &se) && errors.Is(se.Err, oe) {
			msg = strings.Replace(msg, se.Error(), se.Step+": "+strings.Replace(se.Err.Error(), oe.Error(), errno, 1), 1)
		}
		msg = strings.Replace(msg, oe.Error(), errno, 1)
	}
	return msg
}
