package main

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// seedCleaner removes the temporary seed image when a signal ends the
// run: bench.Run removes it when it returns, which a SIGINT (Ctrl-C),
// SIGTERM or SIGHUP would otherwise prevent. After removing it, the
// signal is raised again with its default action, so that the exit
// status still says what killed qbench.
type seedCleaner struct {
	mu   sync.Mutex
	dir  string
	sigs chan os.Signal
	done chan struct{}
}

// cleanOnSignal starts watching for the signals; stop ends it.
func cleanOnSignal() *seedCleaner {
	c := &seedCleaner{sigs: make(chan os.Signal, 1), done: make(chan struct{})}
	signal.Notify(c.sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go c.wait()
	return c
}

// seedDir records the directory to remove (bench.Config.SeedDir).
func (c *seedCleaner) seedDir(dir string) {
	c.mu.Lock()
	c.dir = dir
	c.mu.Unlock()
}

func (c *seedCleaner) wait() {
	select {
	case <-c.done:
		return
	case s := <-c.sigs:
		c.mu.Lock() // held until the process dies: no new seedDir
		if c.dir != "" {
			os.RemoveAll(c.dir)
		}
		signal.Reset(s)
		syscall.Kill(os.Getpid(), s.(syscall.Signal))
	}
}

// stop stops watching (the run returned and removed the image itself).
func (c *seedCleaner) stop() {
	signal.Stop(c.sigs)
	close(c.done)
}
