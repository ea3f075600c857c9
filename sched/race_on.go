//go:build race

package sched

// raceEnabled is true under -race, where the detector's shadow memory makes
// allocation counts meaningless.
const raceEnabled = true
