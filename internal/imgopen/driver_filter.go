package imgopen

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/qcow2"
)

// The filters over one child: copy-on-read and throttle.

// AllocatedImage adapts a *qcow2.Image to filter.Allocator through
// BlockStatus: allocated means the top layer decides the contents (data or
// zero clusters), so copy-on-read leaves it alone.
type AllocatedImage struct{ *qcow2.Image }

var _ filter.AllocatorDevice = AllocatedImage{}

// Allocated implements filter.Allocator.
func (a AllocatedImage) Allocated(off, n int64) (bool, int64, error) {
	st, err := a.BlockStatus(off, n)
	if err != nil {
		return false, 0, err
	}
	return st.Allocated, st.Len, nil
}

// errReadOnlyNode is QEMU's refusal of a node that must write, opened
// read-only.
var errReadOnlyNode = errors.New("Block node is read-only")

func (b *builder) cor(n *node) (block.Device, error) {
	top, err := b.child(n, "file")
	if err != nil {
		return nil, err
	}
	im := imageOf(top)
	if im == nil {
		top.Close()
		return nil, fmt.Errorf("image spec: %s: copy-on-read needs a qcow2 top image", n.path)
	}
	// The filter writes what it reads: QEMU refuses it read-only (its
	// child's write permission).
	if ro, err := n.boolean("read-only", b.def.ReadOnly || b.parentRO); err != nil || ro {
		top.Close()
		if err == nil {
			err = errReadOnlyNode
		}
		return nil, err
	}
	var src block.Device
	if n.has("source") {
		if src, err = b.child(n, "source"); err != nil {
			top.Close()
			return nil, err
		}
	}
	c := filter.NewCopyOnRead(corTop{top, AllocatedImage{im}, int64(im.Geometry().ClusterSize)}, src)
	b.inheritDir(c, top)
	return c, nil
}

func (b *builder) throttle(n *node) (block.Device, error) {
	var l filter.ThrottleLimits
	lim := n
	if v, ok := n.get("limits"); ok {
		lm, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("image spec: %s: expected a node", n.name("limits"))
		}
		lim = newNode(lm, n.name("limits"))
	}
	for _, f := range []struct {
		k string
		p *float64
	}{
		{"iops-total", &l.IOPSTotal}, {"iops-read", &l.IOPSRead}, {"iops-write", &l.IOPSWrite},
		{"bps-total", &l.BPSTotal}, {"bps-read", &l.BPSRead}, {"bps-write", &l.BPSWrite},
	} {
		if strings.HasPrefix(f.k, "bps") {
			// Bandwidth may carry a size suffix (bps-total=100M).
			v, err := lim.size(f.k)
			if err != nil {
				return nil, err
			}
			*f.p = float64(v)
			continue
		}
		v, err := lim.float(f.k)
		if err != nil {
			return nil, err
		}
		*f.p = v
	}
	burst, err := lim.float("burst")
	if err != nil {
		return nil, err
	}
	l.Burst = time.Duration(burst * float64(time.Second))
	if lim != n {
		if err := lim.done(); err != nil {
			return nil, err
		}
	}
	child, err := b.child(n, "file")
	if err != nil {
		return nil, err
	}
	t := filter.NewThrottle(child, l, nil)
	b.inheritDir(t, child)
	b.throttles.add(t)
	return t, nil
}
