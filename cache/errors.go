package cache

import (
	"errors"
	"fmt"
	"os"
)

var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = os.ErrClosed
	// ErrMisaligned: a table offset that is negative or not a multiple of
	// TableSize.
	ErrMisaligned = errors.New("table offset not aligned to the table size")
	// ErrConfig: an invalid Config.
	ErrConfig = errors.New("invalid cache configuration")
	// ErrCycle: SetDependency would make a cache (indirectly) depend on
	// itself.
	ErrCycle = errors.New("dependency cycle")
)

// Error is a cache error about one table: "cache l2: table at 0x50000: ...".
type Error struct {
	Cache string
	Off   int64
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("cache %s: table at 0x%x: %v", e.Cache, e.Off, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func (c *Cache) errAt(off int64, err error) error {
	return &Error{Cache: c.cfg.Name, Off: off, Err: err}
}
