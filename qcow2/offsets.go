package qcow2

import "github.com/qring/qring/qcow2/format"

// The engine works in typed offsets (format.GuestOff in the virtual disk,
// format.HostOff in the image file). The public API is block.Device's,
// with int64 guest offsets: guestOff is the one place they are converted,
// after block.CheckRange has ruled out negative ones.
func guestOff(off int64) format.GuestOff { return format.GuestOff(off) }
