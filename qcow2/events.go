package qcow2

// Event is a boundary event of the engine: a moment where bytes start to
// land somewhere new on the host (space reserved ahead, a new table, a
// fill piece). Tests take crash clones at these moments (Options.OnEvent);
// the engine itself never depends on them.
type Event uint8

const (
	EvReserve    Event = iota + 1 // the reserve ahead was extended (after the zeroing request)
	EvRefblock                    // a new refcount block was written (before the table points at it)
	EvReftable                    // a new refcount table was written (before the header points at it)
	EvL1Grow                      // a new, larger L1 table was written (before the header points at it)
	EvL2                          // a new L2 table was written (before the L1 points at it)
	EvFill                        // a fill piece was written (from a fill worker, without Image.mu)
	EvEarlyWrite                  // an early write (Q10) completed, before the cluster is linked
	EvLink                        // a new data cluster was linked into its L2 table (in memory)
	EvRebuild                     // rebuilt refcount structures were written (before the header points at them)
)

var eventNames = [...]string{"", "reserve", "refblock", "reftable", "l1-grow", "l2", "fill", "early-write", "link", "rebuild"}

func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return "event?"
}

// event reports ev to Options.OnEvent. Called with Image.mu held except
// for EvFill and EvEarlyWrite, which come from other goroutines.
func (im *Image) event(ev Event) {
	if h := im.opts.OnEvent; h != nil {
		h(ev)
	}
}
