package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// TestCheck_TruncatedMetadataMatchesQemu: a file cut short so that its
// refcount table, refcount block or L1 table lies a cluster or more past
// the end is opened read-only as QEMU opens it (the part past the end
// reads as zeros): check reports it line for line and exit code as
// qemu-img check (qimg refused to open it), info and map as qemu-img's;
// a repair and a writable open still refuse it, leaving the file as it
// was (qemu-img check -r fails too, and -r all marks it corrupt).
func TestCheck_TruncatedMetadataMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	for _, cs := range []int{4096, 65536} {
		for _, cut := range []int{cs, 2 * cs} {
			p := filepath.Join(d, fmt.Sprintf("m%d-%d.qcow2", cs, cut))
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=%d", cs), p, "4M")
			qio(t, p, fmt.Sprintf("write -P 0x5a 0 %d", 4*cs))
			if err := os.Truncate(p, int64(cut)); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"check"}, {"check", "--output=json"}, {"info"}, {"map", "--output=json"}} {
				want, wantErr, wantCode := testkit.Run(t, "qemu-img", append(args, p)...)
				got, gotErr, gotCode := runQ(t, append(args, p)...)
				if args[0] == "map" {
					got = strings.ReplaceAll(got, `, "compressed": false`, "") // the 8.2 layout (documented)
				}
				if got != want || gotErr != wantErr || gotCode != wantCode {
					t.Errorf("cluster %d, cut at %d: qimg %q (exit %d):\n%s%s\nqemu-img (exit %d):\n%s%s",
						cs, cut, args, gotCode, gotErr, got, wantCode, wantErr, want)
				}
			}
			before, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"check", "-r", "leaks"}, {"check", "-r", "all"}, {"io", "-c", "write 0 512"}} {
				if _, _, code := runQ(t, append(args, p)...); code == 0 {
					t.Errorf("cluster %d, cut at %d: qimg %q succeeded", cs, cut, args)
				}
			}
			if after, err := os.ReadFile(p); err != nil || string(after) != string(before) {
				t.Errorf("cluster %d, cut at %d: a refused repair or write changed the file (%v)", cs, cut, err)
			}
		}
	}
}
