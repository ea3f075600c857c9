package main

import (
	"testing"
	"time"
)

func TestFioSeconds(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      float64
		ok        bool
	}{
		{"job_runtime", `{"fio version":"fio-3.33","jobs":[{"jobname":"floor","elapsed":2,"job_runtime":1241,"read":{"runtime":0},"write":{"runtime":1242}}]}`, 1.241, true},
		{"after a note", "note: something\n" + `{"fio version":"fio-3.33","jobs":[{"job_runtime":500,"read":{"runtime":0},"write":{"runtime":501}}]}`, 0.5, true},
		{"no job_runtime", `{"fio version":"fio-3.33","jobs":[{"job_runtime":0,"read":{"runtime":7},"write":{"runtime":3}}]}`, 0.007, true},
		{"before a warning", `{"fio version":"fio-3.33","jobs":[{"job_runtime":250,"read":{"runtime":0},"write":{"runtime":251}}]}` + "\nfio: warning: something\n", 0.25, true},
		{"qbench", `{"seconds":1.5}`, 0, false},
		{"qemu-img", "Run completed in 1.5 seconds.", 0, false},
	} {
		got, js, ok := fioSeconds([]byte(tc.out))
		if got != tc.want || ok != tc.ok || ok != (js != nil) {
			t.Errorf("%s: fioSeconds = %v, %t (json %d bytes), want %v, %t", tc.name, got, ok, len(js), tc.want, tc.ok)
		}
	}
}

// TestMachineBusy: /proc/stat is read, and a goroutine spinning on a CPU
// shows up in the machine's busy time.
func TestMachineBusy(t *testing.T) {
	b0, ok := machineBusy()
	if !ok {
		t.Fatal("/proc/stat not read")
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	b1, ok := machineBusy()
	if !ok || b1-b0 < 0.1 {
		t.Fatalf("busy %.2f s -> %.2f s over 0.3 s of spinning (ok %v)", b0, b1, ok)
	}
}
