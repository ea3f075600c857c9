package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// strictDev is an export's device that records every request not
// aligned to align, as a server that enforces its minimum block size
// would refuse it; its Extent reports each run of zero or data blocks.
type strictDev struct {
	*memdev.Dev
	align int64

	mu  sync.Mutex
	bad []string
}

func (d *strictDev) check(op string, off, n int64) {
	if off%d.align != 0 || n%d.align != 0 {
		d.mu.Lock()
		d.bad = append(d.bad, fmt.Sprintf("%s [%d, +%d)", op, off, n))
		d.mu.Unlock()
	}
}

func (d *strictDev) violations() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.bad...)
}

func (d *strictDev) Readv(off int64, bufs [][]byte) error {
	d.check("read", off, block.VecLen(bufs))
	return d.Dev.Readv(off, bufs)
}

func (d *strictDev) Writev(off int64, bufs [][]byte) error {
	d.check("write", off, block.VecLen(bufs))
	return d.Dev.Writev(off, bufs)
}

func (d *strictDev) WriteZeroes(off, n int64, f block.Flags) error {
	d.check("write zeroes", off, n)
	return d.Dev.WriteZeroes(off, n, f)
}

func (d *strictDev) Extent(off, n int64) (Extent, error) {
	d.check("block status", off, n)
	b := d.Bytes()
	zero := func(at int64) bool {
		end := min(at+d.align, int64(len(b)))
		return !bytes.ContainsFunc(b[at:end], func(r rune) bool { return r != 0 })
	}
	z := zero(off)
	run := int64(0)
	for run < n && zero(off+run) == z {
		run += d.align
	}
	return Extent{Len: min(run, n), Hole: z, Zero: z}, nil
}

// TestClient_MinBlockSize: a Client of an export with a minimum block
// size of 4 KiB asks for the block sizes and keeps to them, whatever its
// caller asks: unaligned reads, writes, zeroes, trims and block status
// queries reach the device only as whole blocks, and read back as a
// byte model says. It sent every request as it came (it did not ask for
// NBD_INFO_BLOCK_SIZE, and took a minimum it was sent as alignment only
// in Caps), which a server enforcing its minimum refuses.
func TestClient_MinBlockSize(t *testing.T) {
	const size = 1 << 20
	dev := &strictDev{Dev: memdev.FromBytes(make([]byte, size), memdev.Options{}), align: 4096}
	s := newTestServer(t, &Export{Dev: dev, MinBlock: 4096})
	c := dialExport(t, s, "", ClientOptions{})
	if a := c.Caps().Align; a != 4096 {
		t.Errorf("Caps().Align %d, want the server's minimum 4096", a)
	}
	model := make([]byte, size)
	seed := testkit.Seed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	span := func() (int64, int64) {
		off := rng.Int64N(size - 1)
		return off, 1 + rng.Int64N(min(size-off, 3*4096))
	}
	for i := range 400 {
		off, n := span()
		switch op := rng.IntN(5); op {
		case 0:
			p := pattern(int(n), byte(i))
			// Two buffers, split anywhere: the edges of a block and of
			// a buffer fall apart.
			cut := rng.Int64N(n + 1)
			if err := c.Writev(off, [][]byte{p[:cut], p[cut:]}); err != nil {
				t.Fatalf("write [%d, +%d): %v", off, n, err)
			}
			copy(model[off:], p)
		case 1:
			if err := c.WriteZeroes(off, n, block.MayUnmap); err != nil {
				t.Fatalf("write zeroes [%d, +%d): %v", off, n, err)
			}
			clear(model[off : off+n])
		case 2:
			got := make([]byte, n)
			if err := block.ReadAt(c, got, off); err != nil {
				t.Fatalf("read [%d, +%d): %v", off, n, err)
			}
			if !bytes.Equal(got, model[off:off+n]) {
				t.Fatalf("read [%d, +%d) differs from the model (seed %d)", off, n, seed)
			}
		case 3:
			data, zero, run, err := c.ZeroRun(off, n)
			if err != nil || run <= 0 || run > n {
				t.Fatalf("ZeroRun(%d, %d): %v %v %d %v", off, n, data, zero, run, err)
			}
			if zero && !bytes.Equal(model[off:off+run], make([]byte, run)) {
				t.Fatalf("ZeroRun(%d, %d): zero for %d bytes that hold data", off, n, run)
			}
		case 4:
			// Only whole blocks inside the range may go: the bytes at
			// its edges stay (the server does not discard here).
			if err := c.Discard(off, n); err != nil {
				t.Fatalf("discard [%d, +%d): %v", off, n, err)
			}
		}
	}
	if err := c.WriteZeroes(100, 4096, block.Allocate); !errors.Is(err, block.ErrNotSupported) {
		t.Errorf("unaligned WriteZeroes(Allocate): %v, want ErrNotSupported (B3)", err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dev.Bytes(), model) {
		t.Errorf("the export differs from the model (seed %d)", seed)
	}
	if bad := dev.violations(); len(bad) > 0 {
		t.Errorf("%d requests not aligned to the minimum block size, first %s", len(bad), bad[0])
	}
}

// TestClient_MinBlockSizeConcurrent: unaligned writes from many
// goroutines into the same blocks (each its own bytes of every block)
// all land: a read-modify-write never undoes a write to its block made
// between its read and its write back.
func TestClient_MinBlockSizeConcurrent(t *testing.T) {
	const size, blocks, writers = 64 << 10, 16, 8
	dev := &strictDev{Dev: memdev.FromBytes(make([]byte, size), memdev.Options{}), align: 4096}
	s := newTestServer(t, &Export{Dev: dev, MinBlock: 4096})
	c := dialExport(t, s, "", ClientOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			piece := int64(4096 / writers)
			for round := range 20 {
				for b := range int64(blocks) {
					p := bytes.Repeat([]byte{byte(w*32 + round)}, int(piece))
					if err := c.Writev(b*4096+int64(w)*piece, [][]byte{p}); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if err := block.ReadAt(c, got, 0); err != nil {
		t.Fatal(err)
	}
	for b := range blocks {
		for w := range writers {
			at := b*4096 + w*4096/writers
			if want := byte(w*32 + 19); got[at] != want || got[at+4096/writers-1] != want {
				t.Fatalf("block %d, writer %d: %#x, want its last write %#x", b, w, got[at], want)
			}
		}
	}
	if bad := dev.violations(); len(bad) > 0 {
		t.Errorf("%d requests not aligned, first %s", len(bad), bad[0])
	}
}

// blockSizeScript is a server's handshake that gives block sizes
// minimum, preferred, maximum before an export of size bytes.
func blockSizeScript(minimum, preferred, maximum uint32, size uint64) [][]byte {
	var b []byte
	var parts [][]byte
	cut := func() { parts = append(parts, b); b = nil }
	rep := func(opt, typ uint32, data []byte) {
		b = binary.BigEndian.AppendUint64(b, magicRep)
		b = binary.BigEndian.AppendUint32(b, opt)
		b = binary.BigEndian.AppendUint32(b, typ)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	b = binary.BigEndian.AppendUint64(b, magicInit)
	b = binary.BigEndian.AppendUint64(b, magicOpts)
	b = binary.BigEndian.AppendUint16(b, flagFixedNewstyle|flagNoZeroes)
	cut()
	cut() // the client's flags
	rep(optStructuredReply, repErrUnsup, nil)
	cut()
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, minimum)
	bs = binary.BigEndian.AppendUint32(bs, preferred)
	bs = binary.BigEndian.AppendUint32(bs, maximum)
	rep(optGo, repInfo, bs)
	ex := binary.BigEndian.AppendUint16(nil, infoExport)
	ex = binary.BigEndian.AppendUint64(ex, size)
	ex = binary.BigEndian.AppendUint16(ex, FlagHasFlags)
	rep(optGo, repInfo, ex)
	rep(optGo, repAck, nil)
	cut()
	return parts
}

// TestClient_BlockSizesChecked: block sizes a client cannot keep to
// (QEMU's client refuses them in these words, nbd_opt_info_or_go) end
// the handshake; an export whose size is not a multiple of its minimum
// has a tail no aligned request reaches (it was taken).
func TestClient_BlockSizesChecked(t *testing.T) {
	for _, c := range []struct {
		min, pref, max uint32
		size           uint64
		want           string
	}{
		{4096, 4096, 1 << 25, 1<<20 + 512, "export size 1049088 is not multiple of minimum block size 4096"},
		{3000, 4096, 1 << 25, 1 << 20, "server minimum block size 3000 is not a power of two"},
		{512, 256, 1 << 25, 1 << 20, "server preferred block size 256 is not valid"},
		{4096, 4096, 1024, 1 << 20, "server maximum block size 1024 is not valid"},
		{512, 4096, 1 << 25, 1 << 20, ""},
	} {
		cl, err := hostileServer(t, blockSizeScript(c.min, c.pref, c.max, c.size)...)
		if c.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", c, err)
				continue
			}
			if a := cl.Caps().Align; a != int64(c.min) {
				t.Errorf("%+v: align %d", c, a)
			}
			cl.Close()
			continue
		}
		var pe *ProtocolError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want a ProtocolError %q", c, err, c.want)
		}
		if err == nil {
			cl.Close()
		}
	}
}

// TestClient_MinBlockSizeLikeQemu: qemu-nbd over a node of 4 KiB
// request alignment (blkdebug's align, as a disk of 4 KiB logical
// blocks with O_DIRECT) tells a client that asks its minimum, 4096, and
// the Client keeps to it (it did not ask, and got 1): unaligned writes
// through it read back in qemu-io as they were written.
func TestClient_MinBlockSizeLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-nbd", "qemu-io")
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := testkit.ServeQemuNbd(t, "--image-opts", "driver=blkdebug,align=4096,image.driver=file,image.filename="+img)
	c, err := Dial(context.Background(), Address{Network: "unix", Addr: sock}, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a := c.Caps().Align; a != 4096 {
		t.Errorf("Caps().Align %d, want qemu-nbd's minimum 4096", a)
	}
	p := pattern(10000, 9)
	if err := c.Writev(1000, [][]byte{p}); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(3000, 100, 0); err != nil {
		t.Fatal(err)
	}
	clear(p[2000:2100])
	got := make([]byte, len(p))
	if err := block.ReadAt(c, got, 1000); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, p))
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	uri := "nbd+unix:///?socket=" + sock
	for _, cmd := range []string{"read -P 0 0 1000", "read -P 0 3000 100", "read -P 0 11000 1037576"} {
		out, err := exec.Command("qemu-io", "-f", "raw", "-r", uri, "-c", cmd).CombinedOutput()
		if err != nil || strings.Contains(string(out), "Pattern verification failed") {
			t.Errorf("qemu-io %s: %v\n%s", cmd, err, out)
		}
	}
	out, err := exec.Command("qemu-io", "-f", "raw", "-r", uri, "-c", "read -v 1000 16").CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%02x %02x", p[0], p[1])) {
		t.Errorf("qemu-io read -v 1000 16: %v\n%s", err, out)
	}
}

// TestClient_ZeroRunEmpty: an empty range is answered without asking the
// server (a BLOCK_STATUS of length 0 went out, and the server's EINVAL
// was the caller's error).
func TestClient_ZeroRunEmpty(t *testing.T) {
	s := newTestServer(t, &Export{Dev: newMem(memdev.Options{})})
	c := dialExport(t, s, "", ClientOptions{})
	for _, off := range []int64{0, 4096, 100} {
		if _, _, n, err := c.ZeroRun(off, 0); err != nil || n != 0 {
			t.Errorf("ZeroRun(%d, 0): %d bytes, %v", off, n, err)
		}
	}
}
