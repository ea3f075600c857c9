package nbd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// startQemuNbd serves a zeroed raw file of testSize bytes with
// qemu-nbd 7.2, persistent and shared (-t -e 0), with args added, and
// returns its socket as a testServer for dial.
func startQemuNbd(t *testing.T, args ...string) *testServer {
	t.Helper()
	testkit.NeedTools(t, "qemu-nbd")
	dir := shortTempDir(t)
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, make([]byte, testSize), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	cmd := exec.Command("qemu-nbd", append([]string{"-t", "-e", "0", "-f", "raw", "-k", sock}, append(args, img)...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		// Connected, not merely bound (the socket's file exists a
		// moment before qemu-nbd listens); -t keeps it serving after
		// this probe.
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i == 1000 {
			t.Fatalf("qemu-nbd did not start: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &testServer{addr: sock}
}

// shortTempDir is a temporary directory short enough for a socket path.
func shortTempDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "nbdq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// replies describes option replies without what the two servers may
// differ in by design: error messages and context ids.
func replies(rs []optReply) string {
	var out []string
	for _, r := range rs {
		switch {
		case r.typ&repErrBit != 0:
			out = append(out, fmt.Sprintf("err%d", r.typ&^repErrBit))
		case r.typ == repMetaContext:
			out = append(out, fmt.Sprintf("ctx%d %s", binary.BigEndian.Uint32(r.data), r.data[4:]))
		case r.typ == repInfo:
			out = append(out, fmt.Sprintf("info%d %x", binary.BigEndian.Uint16(r.data), r.data[2:]))
		case r.typ == repAck:
			out = append(out, "ack")
		default:
			out = append(out, fmt.Sprintf("rep%d %x", r.typ, r.data))
		}
	}
	return strings.Join(out, "; ")
}

// TestOptionsLikeQemuNbd: option haggling answered as qemu-nbd 7.2
// answers it, reply for reply (error messages aside), each option on a
// fresh connection that negotiated structured replies (unless noSR):
// NBD_OPT_INFO and GO send the description unasked and in qemu-nbd's
// order (qnbd sent NBD_INFO_DESCRIPTION only when asked, after the
// export's size); metadata contexts come in qemu-nbd's order and ids
// (LIST's with id 0) whatever the queries' order; a query longer than
// 4096 bytes is skipped (qnbd refused the whole option as INVALID); a
// NUL in a query or name is INVALID (qnbd took it, or answered UNKNOWN);
// options over 64 KiB (many queries) are answered, not TOO_BIG;
// STARTTLS with data is INVALID (qnbd: POLICY, TLS not configured).
// The one difference kept: data past a meta context request's last
// query is INVALID here (the spec's MUST), where qemu-nbd answers the
// queries and misreads the data as the next option.
func TestOptionsLikeQemuNbd(t *testing.T) {
	q := startQemuNbd(t, "-x", "disk", "-D", "a test disk", "-A")
	s := newTestServer(t, &Export{Name: "disk", Description: "a test disk", Dev: newMem(memdev.Options{}), MultiConn: true,
		AllocationDepth: true})
	long := strings.Repeat("x", maxString+1)
	many := func(q string, n int) []string {
		qs := make([]string, n)
		for i := range qs {
			qs[i] = q
		}
		return qs
	}
	cases := []struct {
		name string
		noSR bool
		opt  uint32
		data []byte
		diff bool // a deliberate difference
	}{
		{name: "info", opt: optInfo, data: infoData("disk")},
		{name: "info name", opt: optInfo, data: infoData("disk", infoName)},
		{name: "info description", opt: optInfo, data: infoData("disk", infoDescription)},
		{name: "info all", opt: optInfo, data: infoData("disk", infoName, infoDescription, infoBlockSize, 99)},
		{name: "info no SR", noSR: true, opt: optInfo, data: infoData("disk", infoBlockSize)},
		{name: "info unknown export", opt: optInfo, data: infoData("nope")},
		{name: "info NUL in name", opt: optInfo, data: infoData("disk\x00")},
		{name: "info long name", opt: optInfo, data: infoData(long)},
		{name: "info trailing data", opt: optInfo, data: append(infoData("disk"), 0)},
		{name: "info short", opt: optInfo, data: []byte{0, 0, 1}},
		{name: "go 64 KiB", opt: optGo, data: make([]byte, 64<<10+1)},
		{name: "list", opt: optList},
		{name: "list with data", opt: optList, data: []byte{1}},
		{name: "structured again", opt: optStructuredReply},
		{name: "structured with data", noSR: true, opt: optStructuredReply, data: []byte{0}},
		{name: "starttls", opt: optStartTLS},
		{name: "starttls with data", opt: optStartTLS, data: []byte{1}},
		{name: "peek export", opt: optPeekExport},
		{name: "unknown option", opt: 99, data: make([]byte, 100<<10)},
		{name: "list meta before SR", noSR: true, opt: optListMetaContext, data: metaData("disk")},
		{name: "set meta before SR", noSR: true, opt: optSetMetaContext, data: metaData("disk", "base:allocation")},
		{name: "list meta all", opt: optListMetaContext, data: metaData("disk")},
		{name: "list qemu:", opt: optListMetaContext, data: metaData("disk", "qemu:")},
		{name: "list base:", opt: optListMetaContext, data: metaData("disk", "base:")},
		{name: "list qemu:dirty-bitmap:", opt: optListMetaContext, data: metaData("disk", "qemu:dirty-bitmap:")},
		{name: "list twice", opt: optListMetaContext, data: metaData("disk", "base:allocation", "base:allocation")},
		{name: "list order", opt: optListMetaContext, data: metaData("disk", "qemu:allocation-depth", "base:allocation")},
		{name: "list long query", opt: optListMetaContext, data: metaData("disk", long, "base:allocation")},
		{name: "set long query", opt: optSetMetaContext, data: metaData("disk", long, "base:allocation")},
		{name: "set long query last", opt: optSetMetaContext, data: metaData("disk", "qemu:allocation-depth", "base:allocation", long)},
		{name: "set order", opt: optSetMetaContext, data: metaData("disk", "qemu:allocation-depth", "base:allocation")},
		{name: "set qemu:", opt: optSetMetaContext, data: metaData("disk", "qemu:")},
		{name: "set base:", opt: optSetMetaContext, data: metaData("disk", "base:")},
		{name: "set qemu:dirty-bitmap:", opt: optSetMetaContext, data: metaData("disk", "qemu:dirty-bitmap:")},
		{name: "set qemu:dirty-bitmap:x", opt: optSetMetaContext, data: metaData("disk", "qemu:dirty-bitmap:x")},
		{name: "set unknown namespace", opt: optSetMetaContext, data: metaData("disk", "x:y", "base:allocation")},
		{name: "set empty query", opt: optSetMetaContext, data: metaData("disk", "")},
		{name: "set no query", opt: optSetMetaContext, data: metaData("disk")},
		{name: "set NUL at the end", opt: optSetMetaContext, data: metaData("disk", "base:allocation\x00")},
		{name: "set NUL inside", opt: optSetMetaContext, data: metaData("disk", "base:\x00allocation")},
		{name: "set unknown export", opt: optSetMetaContext, data: metaData("nope", "base:allocation")},
		{name: "set long export name", opt: optSetMetaContext, data: metaData(long, "base:allocation")},
		{name: "set 40000 queries", opt: optSetMetaContext, data: metaData("disk", many("base:allocation", 40000)...)},
		{name: "set 20 long queries", opt: optSetMetaContext, data: metaData("disk", append(many(long, 20), "qemu:allocation-depth")...)},
		{name: "set short", opt: optSetMetaContext, data: metaData("disk", "base:allocation")[:20]},
		{name: "set a billion queries", opt: optSetMetaContext, data: func() []byte { b := metaData("disk"); binary.BigEndian.PutUint32(b[8:], 1<<30); return b }()},
		{name: "set trailing data", opt: optSetMetaContext, data: append(metaData("disk", "base:allocation"), 0, 0), diff: true},
	}
	for _, c := range cases {
		var got [2]string
		for i, srv := range []*testServer{q, s} {
			cl := dial(t, srv)
			cl.greet()
			if !c.noSR {
				cl.opt(optStructuredReply, nil)
			}
			got[i] = replies(cl.opt(c.opt, c.data))
		}
		if (got[0] != got[1]) != c.diff {
			t.Errorf("%s:\nqemu-nbd: %s\nqnbd:     %s", c.name, got[0], got[1])
		}
	}
}

// TestAllocationDepthOptInLikeQemuNbd: without qemu-nbd's -A
// (Export.AllocationDepth) qemu:allocation-depth is not offered, as
// qemu-nbd 7.2 offers it only with -A: qnbd offered it always.
func TestAllocationDepthOptInLikeQemuNbd(t *testing.T) {
	q := startQemuNbd(t, "-x", "disk")
	s := newTestServer(t, &Export{Name: "disk", Dev: newMem(memdev.Options{})})
	for _, c := range []struct {
		name string
		opt  uint32
		data []byte
	}{
		{"list all", optListMetaContext, metaData("disk")},
		{"list qemu:", optListMetaContext, metaData("disk", "qemu:")},
		{"list it", optListMetaContext, metaData("disk", "qemu:allocation-depth")},
		{"set it", optSetMetaContext, metaData("disk", "qemu:allocation-depth", "base:allocation")},
		{"set qemu:", optSetMetaContext, metaData("disk", "qemu:")},
	} {
		var got [2]string
		for i, srv := range []*testServer{q, s} {
			cl := dial(t, srv)
			cl.greet()
			cl.opt(optStructuredReply, nil)
			got[i] = replies(cl.opt(c.opt, c.data))
		}
		if got[0] != got[1] {
			t.Errorf("%s:\nqemu-nbd: %s\nqnbd:     %s", c.name, got[0], got[1])
		}
	}
}

// TestFailedSetClearsLikeQemuNbd: a SET_META_CONTEXT that fails (an
// unknown export) leaves no context selected, as the spec says
// ("including when this command fails") and qemu-nbd does: BLOCK_STATUS
// is then EINVAL. qnbd kept the earlier selection.
func TestFailedSetClearsLikeQemuNbd(t *testing.T) {
	q := startQemuNbd(t, "-x", "disk")
	s := newTestServer(t, &Export{Name: "disk", Dev: newMem(memdev.Options{})})
	for i, srv := range []*testServer{q, s} {
		c := dial(t, srv)
		c.greet()
		c.opt(optStructuredReply, nil)
		c.opt(optSetMetaContext, metaData("disk", "base:allocation"))
		if rs := c.opt(optSetMetaContext, metaData("nope", "base:allocation")); rs[0].typ != repErrUnknown {
			t.Fatalf("server %d: SET for an unknown export: %s", i, replies(rs))
		}
		c.opt(optGo, infoData("disk"))
		if code, _, _ := c.do(cmdBlockStatus, 0, 0, 4096, nil); code != errInval {
			t.Errorf("%s: BLOCK_STATUS after a failed SET: error %d, want EINVAL", []string{"qemu-nbd", "qnbd"}[i], code)
		}
	}
}

// TestRequestsLikeQemuNbd: every request type (and two unknown ones)
// with every command flag, over ranges inside, at and past the end of
// the export, with and without structured replies, gets qemu-nbd 7.2's
// error value. The one difference kept is the spec's: WRITE and
// WRITE_ZEROES past the end are ENOSPC here, EINVAL from qemu-nbd (doc.go
// "Errors"). FLUSH with a range past the end was 0 here (its reserved
// fields ignored), EINVAL from qemu-nbd.
func TestRequestsLikeQemuNbd(t *testing.T) {
	q := startQemuNbd(t, "-x", "", "--discard=unmap")
	s := newTestServer(t, &Export{Dev: newMem(memdev.Options{}), Unmap: true, MultiConn: true})
	types := []uint16{cmdRead, cmdWrite, cmdFlush, cmdTrim, cmdCache, cmdWriteZeroes, cmdBlockStatus, 8, 100}
	flags := []uint16{0, cmdFlagFUA, cmdFlagNoHole, cmdFlagDF, cmdFlagReqOne, cmdFlagFastZero, cmdFlagFastZero | cmdFlagNoHole, 1 << 5, 1 << 15}
	ranges := [][2]uint64{{0, 4096}, {0, 0}, {1, 1}, {testSize - 1, 1}, {testSize - 1, 2}, {testSize, 0}, {testSize + 1, 0}, {1 << 62, 4096}}
	for _, structured := range []bool{false, true} {
		var cs [2]*client
		for i, srv := range []*testServer{q, s} {
			cs[i] = dial(t, srv)
			if structured {
				cs[i].connect("", true, "base:allocation")
			} else {
				cs[i].connect("", false)
			}
		}
		for _, typ := range types {
			for _, f := range flags {
				for _, r := range ranges {
					var codes [2]uint32
					for i, c := range cs {
						var payload []byte
						if typ == cmdWrite {
							payload = make([]byte, r[1])
						}
						codes[i], _, _ = c.do(typ, f, r[0], uint32(r[1]), payload)
					}
					pastEnd := r[0]+r[1] > testSize
					if codes[0] == codes[1] || pastEnd && (typ == cmdWrite || typ == cmdWriteZeroes) && codes == [2]uint32{errInval, errNoSpc} {
						continue
					}
					t.Errorf("structured %v: %s flags 0x%x [%d, +%d): qemu-nbd error %d, qnbd %d", structured, cmdName(typ), f, r[0], r[1], codes[0], codes[1])
				}
			}
		}
	}
}

// TestEndsLikeQemuNbd: the options that end a negotiation end it as with
// qemu-nbd 7.2: NBD_OPT_EXPORT_NAME of an unknown export, or of a name
// longer than a string may be, closes the connection (there is no way
// to refuse it); NBD_OPT_ABORT is acknowledged, then the connection
// closes; EXPORT_NAME of the export answers its size and flags.
func TestEndsLikeQemuNbd(t *testing.T) {
	q := startQemuNbd(t, "-x", "disk")
	s := newTestServer(t, &Export{Name: "disk", Dev: newMem(memdev.Options{}), MultiConn: true})
	for i, srv := range []*testServer{q, s} {
		who := []string{"qemu-nbd", "qnbd"}[i]
		for _, name := range []string{"nope", strings.Repeat("d", maxString+1)} {
			c := dial(t, srv)
			c.greet()
			c.sendOpt(optExportName, []byte(name))
			if !c.closed() {
				t.Errorf("%s: EXPORT_NAME of %d bytes unknown: connection open", who, len(name))
			}
		}
		c := dial(t, srv)
		c.greet()
		if rs := c.opt(optAbort, []byte("ignored")); replies(rs) != "ack" || !c.closed() {
			t.Errorf("%s: ABORT: %s, then not closed", who, replies(rs))
		}
		c = dial(t, srv)
		c.greet()
		c.sendOpt(optExportName, []byte("disk"))
		var b [10]byte
		c.read(b[:])
		if binary.BigEndian.Uint64(b[:]) != testSize || binary.BigEndian.Uint16(b[8:]) != FlagHasFlags|FlagSendFlush|FlagSendFUA|FlagSendTrim|FlagSendWriteZeroes|FlagSendFastZero|FlagCanMultiConn|FlagSendCache {
			t.Errorf("%s: EXPORT_NAME: % x", who, b)
		}
	}
}
