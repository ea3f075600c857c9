package invariants

import (
	"errors"
	"strings"
	"testing"
)

func TestAssertf_True(t *testing.T) {
	if err := Assertf(true, "never %d", 1); err != nil {
		t.Fatalf("Assertf(true) = %v", err)
	}
}

// TestAssertf_False panics under the tag and returns an error without it.
func TestAssertf_False(t *testing.T) {
	var err error
	var rec any
	func() {
		defer func() { rec = recover() }()
		err = Assertf(false, "refcount of cluster %d is %d", 7, 0)
	}()
	if Enabled {
		if rec == nil {
			t.Fatal("Assertf(false) did not panic with the invariants tag")
		}
		perr, ok := rec.(error)
		if !ok || !errors.Is(perr, ErrAssertion) {
			t.Fatalf("panic value %#v does not match ErrAssertion", rec)
		}
		err = perr
	} else {
		if rec != nil {
			t.Fatalf("Assertf(false) panicked without the invariants tag: %v", rec)
		}
		if err == nil {
			t.Fatal("Assertf(false) returned nil")
		}
	}
	if !errors.Is(err, ErrAssertion) {
		t.Fatalf("%v does not match ErrAssertion", err)
	}
	var ae *AssertionError
	if !errors.As(err, &ae) || ae.Msg != "refcount of cluster 7 is 0" {
		t.Fatalf("message: %v", err)
	}
	if !strings.Contains(err.Error(), "refcount of cluster 7 is 0") {
		t.Fatalf("Error() = %q", err.Error())
	}
	if errors.Is(errors.New("other"), ErrAssertion) {
		t.Fatal("unrelated error matches ErrAssertion")
	}
}

func TestSometimes(t *testing.T) {
	if Sometimes(0) || Sometimes(-5) {
		t.Fatal("Sometimes(<=0) fired")
	}
	const n = 20000
	hits := 0
	for range n {
		if Sometimes(30) {
			hits++
		}
	}
	if !Enabled {
		if hits != 0 || Sometimes(100) {
			t.Fatalf("Sometimes fired %d times without the invariants tag", hits)
		}
		return
	}
	// 30% of 20000 = 6000, sd ~65: a wide band that never flakes.
	if hits < 5000 || hits > 7000 {
		t.Fatalf("Sometimes(30) fired %d/%d times", hits, n)
	}
	for range 100 {
		if !Sometimes(100) {
			t.Fatal("Sometimes(100) did not fire")
		}
	}
}

func TestSometimes_Concurrent(t *testing.T) {
	done := make(chan bool)
	for range 4 {
		go func() {
			for range 1000 {
				Sometimes(50)
			}
			done <- true
		}()
	}
	for range 4 {
		<-done
	}
}

func BenchmarkAssertf_True(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := Assertf(true, "x %d", 1); err != nil {
			b.Fatal(err)
		}
	}
}
