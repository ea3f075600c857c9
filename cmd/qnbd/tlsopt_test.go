package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// optExchange greets and sends one option per entry on a fresh
// connection to sock, and returns the final reply type of each (or
// "closed" where the server closed the connection instead), then
// "closed" if the server closes the connection after the last reply.
// wantClose says whether the caller expects that close: it is waited
// for up to 20 s (a hang guard; the close may come late on a loaded
// machine), else for 200 ms (a close found then is real; one the server
// would make later is not seen).
func optExchange(t *testing.T, sock string, wantClose bool, opts ...[]byte) []string {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(60 * time.Second)) // a hang guard for the replies
	var g [18]byte
	if _, err := io.ReadFull(nc, g[:]); err != nil {
		t.Fatal(err)
	}
	nc.Write(binary.BigEndian.AppendUint32(nil, 3))
	var out []string
	for _, o := range opts {
		if _, err := nc.Write(o); err != nil {
			return append(out, "closed")
		}
		var h [20]byte
		if _, err := io.ReadFull(nc, h[:]); err != nil {
			return append(out, "closed")
		}
		typ := binary.BigEndian.Uint32(h[12:])
		io.CopyN(io.Discard, nc, int64(binary.BigEndian.Uint32(h[16:])))
		out = append(out, fmt.Sprintf("0x%x", typ))
	}
	var b [1]byte
	wait := 200 * time.Millisecond
	if wantClose {
		wait = 20 * time.Second
	}
	nc.SetReadDeadline(time.Now().Add(wait))
	if _, err := nc.Read(b[:]); err == io.EOF {
		out = append(out, "closed")
	}
	return out
}

// endsClosed reports whether the outcome want of optExchange ends with
// the server closing the connection.
func endsClosed(want []string) bool { return len(want) > 0 && want[len(want)-1] == "closed" }

// rawOpt is an option request.
func rawOpt(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, 0x49484156454F5054)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// TestTLSRefusals_LikeQemuNbd: with TLS required, the options a client
// sends before NBD_OPT_STARTTLS are refused as qemu-nbd 7.2 refuses them
// (NBD_REP_ERR_TLS_REQD for LIST, INFO, unknown options, STRUCTURED_REPLY
// and LIST_META_CONTEXT; EXPORT_NAME closes the connection), with two
// deliberate differences, both the spec's: NBD_OPT_ABORT is acknowledged
// (section "Option types": the server MUST reply NBD_REP_ACK; qemu-nbd
// answers TLS_REQD) before the close, and STARTTLS with data is
// NBD_REP_ERR_INVALID and the client may go on (qemu-nbd also closes).
func TestTLSRefusals_LikeQemuNbd(t *testing.T) {
	need(t, "qemu-img", "qemu-nbd")
	dir, img := create(t, "4M")
	p := writePKI(t, dir)
	seqs := [][][]byte{
		{rawOpt(3, nil), rawOpt(6, []byte{0, 0, 0, 0, 0, 0}), rawOpt(99, []byte{1}), rawOpt(8, nil), rawOpt(9, nil)},
		{rawOpt(1, nil)},
		{rawOpt(2, nil)},
		{rawOpt(2, []byte{1, 2})},
		{rawOpt(5, []byte{1}), rawOpt(3, nil)},
	}
	tlsReqd := "0x80000005"
	want := [][]string{
		{tlsReqd, tlsReqd, tlsReqd, tlsReqd, tlsReqd},
		{"closed"},
		{"0x1", "closed"},
		{"0x1", "closed"},
		{"0x80000003", tlsReqd},
	}
	qemuWant := append(want[:2:2], []string{tlsReqd, "closed"}, []string{tlsReqd, "closed"}, []string{"0x80000003", "closed"})
	qsock := filepath.Join(dir, "q.sock")
	stop := serveQemuNbd(t, qsock, "--object", "tls-creds-x509,id=tls0,endpoint=server,dir="+p.Server, "--tls-creds=tls0", "-f", "qcow2", img)
	for i, sq := range seqs {
		if got := optExchange(t, qsock, endsClosed(qemuWant[i]), sq...); fmt.Sprint(got) != fmt.Sprint(qemuWant[i]) {
			t.Errorf("qemu-nbd, sequence %d: %v, want %v", i, got, qemuWant[i])
		}
	}
	stop()
	s := startUnix(t, dir, "", "--tls-creds", p.Server, "-f", "qcow2", img)
	sock := filepath.Join(dir, "nbd.sock")
	for i, sq := range seqs {
		if got := optExchange(t, sock, endsClosed(want[i]), sq...); fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("qnbd, sequence %d: %v, want %v", i, got, want[i])
		}
	}
	s.stop()
}
