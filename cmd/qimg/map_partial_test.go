package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestMap_PartialBeforeErrorLikeQemu: a map that meets an unusable L2
// entry prints the extents complete before it, then fails, as qemu-img
// map (qimg printed nothing but the error): the human table's rows, or
// the JSON objects each followed by a comma and no closing bracket. The
// JSON objects differ only in qimg's "compressed" (8.2's layout).
func TestMap_PartialBeforeErrorLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	for _, bad := range []int{16, 0} { // guest cluster 16 (1 MiB), and the first
		p := filepath.Join(d, "m.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 128k", "-c", "write -P 2 1M 64k", "-c", "write -P 3 3M 64k", p)
		b := mustReadFile(t, p)
		l2 := binary.BigEndian.Uint64(b[binary.BigEndian.Uint64(b[40:]):]) & 0x00fffffffffffe00
		binary.BigEndian.PutUint64(b[int64(l2)+8*int64(bad):], 1<<63|0x70200) // unaligned
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, format := range []string{"human", "json"} {
			qo, _, qcode := testkit.Run(t, "qemu-img", "map", "--output="+format, p)
			oo, oe, ocode := runQ(t, "map", "--output="+format, p)
			if format == "json" {
				oo = strings.ReplaceAll(oo, `, "compressed": false`, "")
			}
			if qcode != 1 || ocode != qcode || oo != qo || oe == "" {
				t.Errorf("bad cluster %d, %s: qemu-img exit %d\n%q\nqimg exit %d\n%q\nstderr %q", bad, format, qcode, qo, ocode, oo, oe)
			}
			// A range that stops before the bad entry, or starts after
			// it, maps without it, as qemu-img (qimg mapped the whole
			// disk, then cut the range).
			for _, r := range [][]string{{"--max-length=1M"}, {"--start-offset=2M"}, {"--max-length=0"}} {
				args := append([]string{"map", "--output=" + format}, r...)
				qo, _, qcode := testkit.Run(t, "qemu-img", append(args, p)...)
				oo, oe, ocode := runQ(t, append(args, p)...)
				oo = strings.ReplaceAll(oo, `, "compressed": false`, "")
				if (bad == 16 && qcode != 0) || ocode != qcode || oo != qo {
					t.Errorf("bad cluster %d, %s %v: qemu-img exit %d\n%q\nqimg exit %d\n%q\nstderr %q", bad, format, r, qcode, qo, ocode, oo, oe)
				}
			}
		}
	}
}
