package main

import (
	"context"
	"os"
	"sync"
	"time"
)

// stopper is how the server ends, in three stages: the first stop (a
// signal, or the last client leaving without -t) starts the graceful
// shutdown, in which the connections finish their requests and reply;
// a signal during it forces the shutdown (the context it runs under
// ends: the sockets close at once, requests in flight are cut off
// unanswered, and the image is flushed and closed once the requests
// already running on it return); one more signal exits the process at
// once, without flushing or closing the image (it is then as after a
// crash). Most servers take a second Ctrl-C as "now"; qemu-nbd 7.2 has
// no way out of a shutdown a client holds (it waits for the client to
// go, however long that takes).
//
// A signal less than signalBurst after the one that moved the shutdown
// on is the same request, not a second one: timeout(1) sends two at
// once (to the server and to its process group), and a burst of three
// exited without flushing, losing every write acknowledged since the
// last flush.
type stopper struct {
	mu     sync.Mutex
	stage  int         // 0 serving, 1 shutting down, 2 forced
	last   time.Time   // when a signal last moved the shutdown on
	stop   chan string // why the first stop came; buffered, one send
	force  context.Context
	cancel context.CancelFunc
	logf   func(string, ...any)
	exit   func(int)        // os.Exit; tests replace it
	now    func() time.Time // time.Now; tests replace it
}

// signalBurst: signals closer together than this are one request.
const signalBurst = time.Second

func newStopper(logf func(string, ...any)) *stopper {
	ctx, cancel := context.WithCancel(context.Background())
	return &stopper{stop: make(chan string, 1), force: ctx, cancel: cancel, logf: logf, exit: os.Exit, now: time.Now}
}

// quit starts the graceful shutdown, if nothing did yet.
func (s *stopper) quit(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stage == 0 {
		s.stage = 1
		s.stop <- why
	}
}

// signal moves the shutdown one stage on.
func (s *stopper) signal(sig os.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if !s.last.IsZero() && now.Sub(s.last) < signalBurst {
		return
	}
	s.last = now
	switch s.stage {
	case 0:
		s.stage = 1
		s.stop <- sig.String()
	case 1:
		s.stage = 2
		s.logf("%v during the shutdown: closing the connections now, then flushing and closing the image (another signal exits without flushing)", sig)
		s.cancel()
	default:
		s.logf("%v again: exiting without flushing or closing the image", sig)
		s.exit(1)
	}
}
