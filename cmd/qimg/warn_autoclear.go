package main

import "github.com/qring/qring/qcow2"

// openWarn is the qcow2.Options.Warn of o's command (openWarnVia its
// repairLog).
func (o *opts) openWarn(w qcow2.OpenWarning) { openWarnVia(o.repairLog)(w) }

// openWarnVia is a qcow2.Options.Warn that prints the warnings an
// image's open reports (stale persistent bitmaps) through log, a
// command's repairLog (its stderr, as the lines of a dirty image's
// repair), in qemu-img's words: "qimg: warning: " for its
// "qemu-img: warning: ", then the hint on the next line. Nil prints
// nothing.
func openWarnVia(log func(string)) func(qcow2.OpenWarning) {
	return func(w qcow2.OpenWarning) {
		if log == nil {
			return
		}
		s := "qimg: warning: " + w.Message
		if w.Hint != "" {
			s += "\n" + w.Hint
		}
		log(s)
	}
}
