//go:build race

package cache

// raceEnabled: the race detector instruments allocations, so allocation
// tests skip.
const raceEnabled = true
