//go:build race

package qcow2

// raceEnabled: the race detector instruments allocations and slows
// everything down, so allocation assertions are skipped and heavy runs
// are scaled down.
const raceEnabled = true
