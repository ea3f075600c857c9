package qcow2

import (
	"path/filepath"
	"sync"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/holddev"
	"github.com/qring/qring/block/memdev"
)

// The torture suite's external data file (the df token, DF4-DF6): the
// image's guest data lives in a second device. On memdev backends both
// memdevs sit under one lock that every mutating op holds shared, so a
// crash clone takes both, exclusively, at the same moment; each clone
// pair is verified together (reopened with the data clone, checked,
// flushed data read back, qemu-img check of both files). On file
// backends the data file is a file beside the image (its absolute name
// in the header), opened through the case's opener.

// tdataFile is a torture case's data file.
type tdataFile struct {
	path  string       // its file name (the header's; dumps go there)
	mem   *memdev.Dev  // memdev backends: its memdev
	dev   block.Device // memdev backends: its device as the image sees it
	lock  *sync.RWMutex
	clone *memdev.Dev // the crash clone being verified (cmu held)
}

// pairLocked is a memdev whose mutating ops hold lock shared: a crash
// clone of the image and of its data file, taken with lock exclusive,
// is of one moment.
type pairLocked struct {
	*memdev.Dev
	lock *sync.RWMutex
}

func (d *pairLocked) Writev(off int64, b [][]byte) error {
	d.lock.RLock()
	defer d.lock.RUnlock()
	return d.Dev.Writev(off, b)
}

func (d *pairLocked) WriteZeroes(off, n int64, f block.Flags) error {
	d.lock.RLock()
	defer d.lock.RUnlock()
	return d.Dev.WriteZeroes(off, n, f)
}

func (d *pairLocked) Flush() error {
	d.lock.RLock()
	defer d.lock.RUnlock()
	return d.Dev.Flush()
}

func (d *pairLocked) Truncate(n int64) error {
	d.lock.RLock()
	defer d.lock.RUnlock()
	return d.Dev.Truncate(n)
}

// dfCreateOptions names the data file in co (df configurations).
func (r *trun) dfCreateOptions(co *CreateOptions) {
	if !r.cfg.df {
		return
	}
	r.df.path = filepath.Join(r.dir, "data.raw")
	co.DataFile = r.df.path
}

// dfImageDev is the image's memdev as the case's device stack sees it:
// under the pair lock with a data file.
func (r *trun) dfImageDev() block.Device {
	if !r.cfg.df {
		return r.mem
	}
	r.df.lock = &sync.RWMutex{}
	return &pairLocked{r.mem, r.df.lock}
}

// dfSetupMem makes the data file's memdev (of the disk's size, as
// Create makes the file) under the pair lock and the case's hooks.
func (r *trun) dfSetupMem(ho holddev.Options) {
	if !r.cfg.df {
		return
	}
	r.df.mem = memdev.New(r.cfg.memDevOptions())
	if err := r.df.mem.Truncate(r.size); err != nil {
		r.fatalf("data file: %v", err)
	}
	r.df.dev = holddev.New(&pairLocked{r.df.mem, r.df.lock}, ho)
}

// dfCrashClone takes the crash clone of the image's memdev and, with a
// data file, of the data file's at the same moment (cmu held).
func (r *trun) dfCrashClone() *memdev.Dev {
	if !r.cfg.df {
		return r.mem.CrashClone(r.crng, r.crng.Float64())
	}
	r.df.lock.Lock()
	defer r.df.lock.Unlock()
	img := r.mem.CrashClone(r.crng, r.crng.Float64())
	r.df.clone = r.df.mem.CrashClone(r.crng, r.crng.Float64())
	return img
}

// dfDump writes the data file's memdev (or d, a clone of it) where the
// header names it, for qemu-img.
func (r *trun) dfDump(d *memdev.Dev) {
	if !r.cfg.df || d == nil {
		return
	}
	if err := d.WriteFile(r.df.path); err != nil {
		r.t.Errorf("dump of the data file: %v", err)
	}
}
