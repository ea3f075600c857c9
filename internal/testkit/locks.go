package testkit

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// HoldsLockByte reports whether some process holds a lock covering byte
// b of the file at path, as /proc/locks shows it (QEMU's image locks are
// open file description locks on permission bytes: 101 is write). Tests
// wait on it so that they never race the process taking the lock.
func HoldsLockByte(path string, b int64) bool {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return false
	}
	ino := ":" + strconv.FormatUint(st.Ino, 10)
	locks, _ := os.ReadFile("/proc/locks")
	for _, l := range strings.Split(string(locks), "\n") {
		// "1: OFDLCK ADVISORY  WRITE -1 fe:00:9977891 101 101"
		f := strings.Fields(l)
		if len(f) < 8 || !strings.HasSuffix(f[5], ino) {
			continue
		}
		lo, err1 := strconv.ParseInt(f[6], 10, 64)
		hi, err2 := strconv.ParseInt(f[7], 10, 64)
		if f[7] == "EOF" {
			hi, err2 = 1<<63-1, nil
		}
		if err1 == nil && err2 == nil && lo <= b && b <= hi {
			return true
		}
	}
	return false
}

// WaitLockByte waits until some process holds lock byte b of the file at
// path (100: QEMU's read permission, 101: write), for 10 s at most (a
// look that takes no lock, so that the process taking it is never the
// one refused).
func WaitLockByte(t testing.TB, path string, b int64) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if HoldsLockByte(path, b) {
			return
		}
	}
	t.Fatalf("nobody took lock byte %d of %s", b, path)
}
