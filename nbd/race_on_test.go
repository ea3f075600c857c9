//go:build race

package nbd

// raceEnabled: the race detector slows everything down, so the heavy
// runs are scaled down.
const raceEnabled = true
