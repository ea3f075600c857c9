package luksdisk

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/crypto/luks"
)

// TestAmend_CrashKeepsKeys: a power cut at any write of an amend (a
// crash clone of the durable bytes before each write, and after the last)
// leaves a volume that opens with the passphrases it had before or with
// those it has after, and reads the same data (LV7).
func TestAmend_CrashKeepsKeys(t *testing.T) {
	_, area, _, err := luks.Create([]byte("old"), luks.CreateOptions{Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var clones []*memdev.Dev
	var m *memdev.Dev
	record := func(int64, int64) {
		mu.Lock()
		defer mu.Unlock()
		if m != nil {
			clones = append(clones, m.CrashClone(rand.New(rand.NewPCG(1, 2)), 0))
		}
	}
	dev := memdev.New(memdev.Options{OnWrite: record})
	if err := dev.Writev(0, [][]byte{area}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(dev, Options{Passphrase: []byte("old"), Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xab}, 8192)
	if err := d.Writev(0, [][]byte{data}); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	opens := func(c *memdev.Dev, pass string) bool {
		x, err := Open(c, Options{Passphrase: []byte(pass)})
		if err != nil {
			return false
		}
		got := make([]byte, len(data))
		if err := x.Readv(0, [][]byte{got}); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("opened with %q but read other data (%v)", pass, err)
		}
		return true
	}
	step := func(name string, o luks.AmendOptions, before, after []string) {
		mu.Lock()
		m, clones = dev, nil
		mu.Unlock()
		if err := d.Amend(o); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		mu.Lock()
		m = nil
		cs := append(clones, dev.CrashClone(rand.New(rand.NewPCG(1, 2)), 0))
		mu.Unlock()
		if len(cs) < 3 {
			t.Fatalf("%s: %d crash points", name, len(cs))
		}
		for i, c := range cs {
			old := opens(c, before[0]) && (len(before) < 2 || opens(c, before[1]))
			nw := opens(c, after[0]) && (len(after) < 2 || opens(c, after[1]))
			if !old && !nw {
				t.Fatalf("%s: crash point %d opens with neither the passphrases before nor those after", name, i)
			}
			if i == len(cs)-1 && !nw {
				t.Fatalf("%s: after the amend the new passphrases do not open", name)
			}
		}
	}
	step("add", luks.AmendOptions{Active: true, New: []byte("new"), HasNew: true, Iterations: 1000, HasIterTime: true}, []string{"old"}, []string{"old", "new"})
	step("erase", luks.AmendOptions{Old: []byte("old"), HasOld: true}, []string{"old", "new"}, []string{"new"})
	if opens(dev, "old") {
		t.Fatal("the erased passphrase still opens the volume")
	}
}
