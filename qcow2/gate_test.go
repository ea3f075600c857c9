package qcow2

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGate_TicketPassesOnlyAfterEarlierRequestsLeave(t *testing.T) {
	var g dataGate
	tok := g.enter()
	tk := g.ticket()
	g.poll()
	g.poll()
	if g.passed(tk) {
		t.Fatal("ticket passed with a request of its epoch still in the gate")
	}
	late := g.enter() // enters after the ticket: never waited for
	g.exit(tok)
	g.poll()
	if !g.passed(tk) {
		t.Fatal("ticket did not pass after its request left")
	}
	g.exit(late)
}

func TestGate_IdlePollPassesAtOnce(t *testing.T) {
	var g dataGate
	tk := g.ticket()
	g.poll()
	if !g.passed(tk) {
		t.Fatal("an idle gate did not pass a ticket in one poll")
	}
}

// A poll can leave the epoch before the current one undrained; a sync
// that starts then must still wait for that epoch's requests.
func TestGate_SyncWaitsForEpochLeftByPoll(t *testing.T) {
	var g dataGate
	tok := g.enter()
	g.poll() // moves on, leaving tok's epoch in
	done := make(chan struct{})
	go func() { g.sync(); close(done) }()
	select {
	case <-done:
		t.Fatal("sync returned with a request of an earlier epoch in the gate")
	case <-time.After(50 * time.Millisecond):
	}
	g.exit(tok)
	select {
	case <-done:
	case <-time.After(holdTimeout):
		t.Fatal("sync did not return after the request left")
	}
}

// TestGate_Stress: requests look an object up inside the gate and check
// it is not freed until they leave; a freer replaces it, and frees old
// objects either after a sync or once a poll has passed their ticket.
func TestGate_Stress(t *testing.T) {
	type obj struct{ freed atomic.Bool }
	var g dataGate
	var cur atomic.Pointer[obj]
	cur.Store(&obj{})
	stop := make(chan struct{})
	var bad atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				tok := g.enter()
				o := cur.Load()
				for range 3 {
					if o.freed.Load() {
						bad.Add(1)
					}
					runtime.Gosched()
				}
				g.exit(tok)
			}
		}()
	}
	// Another freer syncs meanwhile, so polls also meet syncs in
	// progress (and find the epoch moved under them).
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			g.sync()
			time.Sleep(50 * time.Microsecond)
		}
	}()
	type held struct {
		o  *obj
		tk uint64
	}
	var pending []held
	deadline := time.Now().Add(300 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		old := cur.Swap(&obj{})
		if i%7 == 0 {
			g.sync()
			old.freed.Store(true)
		} else {
			pending = append(pending, held{old, g.ticket()})
		}
		g.poll()
		kept := pending[:0]
		for _, h := range pending {
			if g.passed(h.tk) {
				h.o.freed.Store(true)
			} else {
				kept = append(kept, h)
			}
		}
		pending = kept
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d looks at an object freed while its request was in the gate", n)
	}
}
