package imgopen

import (
	"sync"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/internal/secret"
	"github.com/qring/qring/qcow2"
)

// throttleSet collects the throttle nodes of everything one open made,
// those of the json: backing files the engine opened under it included
// (openSpecLayer), so that Opened.ReleaseThrottles reaches them all: a
// forced shutdown must not wait out a backlog throttled in a backing
// file either.
//
// It also carries the open's --object secrets down to those json:
// backing files, whose key-secret and encrypt.key-secret options name
// them as the image's own spec does (QEMU's secrets are global objects).
type throttleSet struct {
	mu      sync.Mutex
	ts      []*filter.Throttle
	secrets *secret.Store
}

func (s *throttleSet) add(ts ...*filter.Throttle) {
	s.mu.Lock()
	s.ts = append(s.ts, ts...)
	s.mu.Unlock()
}

// release lets every collected throttle's requests through
// (filter.Throttle.Release); nil-safe.
func (s *throttleSet) release() {
	if s == nil {
		return
	}
	s.mu.Lock()
	ts := append([]*filter.Throttle(nil), s.ts...)
	s.mu.Unlock()
	for _, t := range ts {
		t.Release()
	}
}

// openLayer is the engine's qcow2.BackingOpener for an open whose
// throttles s collects (the package's openLayer).
func (s *throttleSet) openLayer(path, format string, o qcow2.Options) (block.Device, error) {
	return openLayerInto(path, format, o, s)
}
