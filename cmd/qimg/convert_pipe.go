package main

import (
	"errors"
	"fmt"
)

// convertIOError is a read or write of convert that failed, in qemu-img's
// words: "error while writing at byte N: " and the errno's text.
type convertIOError struct {
	what string // "reading" or "writing"
	off  int64
	err  error
}

func (e *convertIOError) Error() string {
	return fmt.Sprintf("error while %s at byte %d: %s", e.what, e.off, strerror(e.err))
}

func (e *convertIOError) Unwrap() error { return e.err }

// pipeDepth is how many chunks convert reads ahead of its writes.
const pipeDepth = 4

// pipeJob is one step of convert's walk, its chunk read ahead (buf: nil
// for a step without data; err: the read's), or the walk's end (last,
// with the walk's error).
type pipeJob struct {
	s    convertStep
	buf  []byte
	err  error
	last bool
}

// errPipeStop ends the reader's walk: the writer stopped, or a read failed.
var errPipeStop = errors.New("convert: pipeline stopped")

// pipeWalk runs the walk w with its reads (read, into a buffer of
// convertBufSize) on a goroutine of their own, up to pipeDepth chunks
// ahead, and its writes (write) here, in the walk's order: the device
// reads the next chunks while the output writes this one, as qemu-img
// convert's coroutines overlap them (its writes stay in order without
// -W, as these do). The first error in the walk's order is returned: a
// read's once everything before it is written, a write's once the reader
// has stopped. Nothing is read past a failed read.
func pipeWalk(w convertWalk, read, write func(convertStep, []byte) error) error {
	free := make(chan []byte, pipeDepth)
	for range pipeDepth {
		free <- make([]byte, convertBufSize)
	}
	jobs := make(chan pipeJob, pipeDepth)
	quit := make(chan struct{})
	go func() {
		defer close(jobs)
		send := func(j pipeJob) bool {
			select {
			case jobs <- j:
				return true
			case <-quit:
				return false
			}
		}
		err := w.walk(func(s convertStep) error {
			j := pipeJob{s: s}
			if s.kind == stepCopy {
				select {
				case j.buf = <-free:
				case <-quit:
					return errPipeStop
				}
				j.buf = j.buf[:s.n]
				j.err = read(s, j.buf)
			}
			if !send(j) || j.err != nil {
				return errPipeStop
			}
			return nil
		})
		if err != errPipeStop {
			send(pipeJob{last: true, err: err})
		}
	}()
	stop := func(err error) error {
		close(quit)
		for range jobs { // until the reader has stopped
		}
		return err
	}
	for j := range jobs {
		if j.last {
			return j.err
		}
		if j.err != nil {
			return stop(j.err)
		}
		if err := write(j.s, j.buf); err != nil {
			return stop(err)
		}
		if j.buf != nil {
			free <- j.buf[:cap(j.buf)]
		}
	}
	return nil
}
