package nbd

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// Server serves Exports to the connections of one or more listeners.
// The zero value with Exports set is ready to use; fields must not change
// once serving began.
type Server struct {
	Exports []*Export
	// TLS, if set, makes TLS mandatory (section "TLS support": the
	// server refuses every option but NBD_OPT_STARTTLS and ABORT until the
	// client upgraded).
	TLS *tls.Config
	// MaxInFlight bounds the requests of one connection running at once
	// (default 64); MaxInFlightBytes the memory they hold until their
	// replies are sent: READ and WRITE payloads, and BLOCK_STATUS
	// descriptors at their worst case (default 64 MiB, at least
	// MaxPayload).
	MaxInFlight      int
	MaxInFlightBytes int64
	// HandshakeLimit bounds the negotiation of a connection (default 10
	// s, as qemu-nbd's --handshake-limit); a client that has not entered
	// the transmission phase by then is disconnected. Negative: no limit.
	HandshakeLimit time.Duration
	// MaxHandshakes bounds the connections negotiating at once (default
	// 128; negative: no bound). A connection costs a few KiB until it
	// enters the transmission phase (its large buffers come then), and
	// at most HandshakeLimit; when one more arrives with MaxHandshakes
	// negotiating, the one that has been negotiating longest is closed
	// (logged, at most a line a second), so that a flood of connections
	// that never negotiate neither grows the server's memory nor locks
	// clients out: a client's negotiation takes a few round trips and
	// is the newest. qemu-nbd has no such bound.
	MaxHandshakes int
	// MaxConns bounds the connections served at once; 0 means no bound.
	// When reached, Serve stops accepting until one ends, so further
	// clients wait in the listen queue (qemu-nbd's --shared).
	MaxConns int
	// Logf, if set, receives errors (refused options and requests that
	// failed on the device are only in Debugf).
	Logf func(format string, args ...any)
	// Debugf, if set, receives a line per connection and per failed
	// request.
	Debugf func(format string, args ...any)
	// OnClose, if set, is called after a connection ended, with the
	// number of connections still open and the number of connections
	// that have entered the transmission phase since the server started
	// (served). A connection that closed without negotiating (a port
	// scan, a readiness probe, a client refused in the handshake) is not
	// counted in served, as qemu-nbd does not count it as a client. Both
	// numbers are taken at once, so the call that sees open == 0 sees
	// every connection that negotiated.
	OnClose func(open, served int)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	served    int // connections that entered transmission
	done      chan struct{}
	wg        sync.WaitGroup
	draining  sync.WaitGroup // device queues failed connections left to finishQueue
	sem       chan struct{}

	negotiating list.List // *conn, oldest first
	evicted     int       // connections closed for MaxHandshakes since the last log line
	evictLog    time.Time // when that line was written
}

// ErrServerClosed is what Serve returns after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

func (s *Server) logf(f string, a ...any) {
	if s.Logf != nil {
		s.Logf(f, a...)
	}
}

func (s *Server) debugf(f string, a ...any) {
	if s.Debugf != nil {
		s.Debugf(f, a...)
	}
}

func (s *Server) maxInFlight() int {
	if s.MaxInFlight > 0 {
		return s.MaxInFlight
	}
	return 64
}

func (s *Server) handshakeLimit() time.Duration {
	if s.HandshakeLimit == 0 {
		return 10 * time.Second
	}
	return s.HandshakeLimit
}

func (s *Server) maxHandshakes() int {
	if s.MaxHandshakes == 0 {
		return 128
	}
	return s.MaxHandshakes
}

func (s *Server) maxInFlightBytes() int64 {
	if s.MaxInFlightBytes <= 0 {
		return 64 << 20
	}
	return max(s.MaxInFlightBytes, MaxPayload)
}

// init sets up the bookkeeping; called with s.mu held.
func (s *Server) init() {
	if s.done == nil {
		s.done = make(chan struct{})
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
		if s.MaxConns > 0 {
			s.sem = make(chan struct{}, s.MaxConns)
		}
	}
}

// Serve accepts connections on l and serves each in its own goroutine
// until Shutdown (then it returns ErrServerClosed) or until l is closed
// by someone else; other accept errors are logged and retried after a
// pause. It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	s.init()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	done, sem := s.done, s.sem
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	backoff := 5 * time.Millisecond
	for {
		if sem != nil {
			select {
			case sem <- struct{}{}:
			case <-done:
				return ErrServerClosed
			}
		}
		nc, err := l.Accept()
		if err != nil {
			if sem != nil {
				<-sem
			}
			select {
			case <-done:
				return ErrServerClosed
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors or memory, an aborted handshake: wait a
			// little and go on accepting, as net/http does, rather than
			// leave every later client without a server.
			s.logf("nbd: accept: %v; retrying in %v", err, backoff)
			select {
			case <-time.After(backoff):
			case <-done:
				return ErrServerClosed
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		c, ok := s.track(nc, sem != nil)
		if !ok {
			if sem != nil {
				<-sem
			}
			continue
		}
		go s.run(c)
	}
}

// ServeConnAsync serves nc in a new goroutine; false if the server is
// shutting down (nc is then closed).
func (s *Server) ServeConnAsync(nc net.Conn) bool {
	c, ok := s.track(nc, false)
	if !ok {
		return false
	}
	go s.run(c)
	return true
}

// ServeConn serves nc until the connection ends.
func (s *Server) ServeConn(nc net.Conn) {
	if c, ok := s.track(nc, false); ok {
		s.run(c)
	}
}

// track registers a connection; counted means it holds a token of
// Serve's semaphore, given back when it ends.
func (s *Server) track(nc net.Conn, counted bool) (*conn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if s.closing {
		nc.Close()
		return nil, false
	}
	c := newConn(s, nc)
	c.counted = counted
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.enterHandshake(c)
	return c, true
}

// enterHandshake counts c among the connections negotiating; if that
// makes one too many, the oldest of them is closed (MaxHandshakes).
// Called with s.mu held.
func (s *Server) enterHandshake(c *conn) {
	c.negotiating = s.negotiating.PushBack(c)
	if limit := s.maxHandshakes(); limit < 0 || s.negotiating.Len() <= limit {
		return
	}
	old := s.negotiating.Remove(s.negotiating.Front()).(*conn)
	old.negotiating = nil
	old.evicted = true
	old.raw.Close()
	s.evicted++
	if now := time.Now(); now.Sub(s.evictLog) >= time.Second {
		s.logf("nbd: %d connections negotiating (MaxHandshakes): closed %d that negotiated longest, the last %s", s.negotiating.Len(), s.evicted, old.raw.RemoteAddr())
		s.evicted, s.evictLog = 0, now
	}
}

// leaveHandshake takes c out of the connections negotiating, when its
// negotiation ended; false if it was closed for MaxHandshakes meanwhile.
func (s *Server) leaveHandshake(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.negotiating != nil {
		s.negotiating.Remove(c.negotiating)
		c.negotiating = nil
	}
	return !c.evicted
}

func (s *Server) run(c *conn) {
	c.serve()
	s.mu.Lock()
	if c.negotiating != nil { // a panic in the negotiation (serve recovered it)
		s.negotiating.Remove(c.negotiating)
		c.negotiating = nil
	}
	delete(s.conns, c)
	open, served := len(s.conns), s.served
	sem := s.sem
	s.mu.Unlock()
	if c.counted {
		<-sem
	}
	s.wg.Done()
	if s.OnClose != nil {
		s.OnClose(open, served)
	}
}

// Shutdown stops accepting, lets every connection finish the requests it
// has started (their replies are sent; a reply write that blocks for
// stopGrace, to a client that does not read, closes its connection),
// then closes the connections. If ctx ends first, the sockets are closed at once; Shutdown still waits
// for the device requests already running (they cannot be cancelled) so
// that the caller may flush and close the device when it returns. The
// one exception: requests a connection's failed device queue still had
// in flight when the connection ended (queue.go, finishQueue) are waited
// for only until ctx ends, since such a queue may never give them back;
// a device may then refuse to close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.init()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()
	idle := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.raw.Close()
		}
		s.mu.Unlock()
		<-idle
	}
	// Every connection has ended, so no finishQueue starts any more.
	drained := make(chan struct{})
	go func() {
		s.draining.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
	}
	return ctx.Err()
}
