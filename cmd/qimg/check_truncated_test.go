package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheck_TruncatedDataMatchesQemu: a file that lost its last data
// clusters (cut a whole cluster or more past some of them) is reported
// by qimg check as by qemu-img check, line for line and exit code: one
// "exceeding the end of the file" error per data cluster, and neither a
// leak for their stored counts past the end nor an image end offset
// past the file (qimg added both, and named the region in the error).
func TestCheck_TruncatedDataMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	for _, cs := range []int{4096, 65536} {
		for _, cut := range []int{1, 512, cs, cs + 4000, 2 * cs, 3*cs + 7, 6 * cs} {
			p := filepath.Join(d, fmt.Sprintf("c%d-%d.qcow2", cs, cut))
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d", cs), p, "4M")
			qio(t, p, fmt.Sprintf("write -P 0x5a 0 %d", 16*cs))
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, st.Size()-int64(cut)); err != nil {
				t.Fatal(err)
			}
			want, wantErr, wantCode := testkit.Run(t, "qemu-img", "check", p)
			got, gotErr, gotCode := runQ(t, "check", p)
			if got != want || gotErr != wantErr || gotCode != wantCode {
				t.Errorf("cluster %d, cut %d: qimg check (exit %d):\n%s%s\nqemu-img check (exit %d):\n%s%s",
					cs, cut, gotCode, gotErr, got, wantCode, wantErr, want)
			}
		}
	}
}
