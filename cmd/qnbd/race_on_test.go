//go:build race

package main

// Under -race the tests also build the server with the race detector, so
// the interop clients drive a race-checked qnbd.
var buildFlags = []string{"-race"}
