package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/nbd/nbdqcow2"
	"github.com/qring/qring/qcow2"
)

// shutdownGrace bounds how long in-flight requests may take to finish
// at shutdown before the sockets are closed under them.
const shutdownGrace = 30 * time.Second

// openImage opens the image as cfg says. A raw image's host file, or a
// spec's, shares every permission but resize: an NBD export does not let
// others resize its image (qemu's nbd_export_create: the size was told
// to the clients), so qemu-img resize fails while qemu-nbd serves the
// image. (A qcow2 image shares no resize already.)
func openImage(cfg *config) (*imgopen.Opened, error) {
	img, err := openView(cfg)
	if err != nil || cfg.snapshot == nil {
		return img, err
	}
	if err := img.LoadSnapshot(*cfg.snapshot); err != nil {
		img.Close()
		return nil, &loadError{err}
	}
	return img, nil
}

// openView opens the image, or with -s its temporary overlay.
func openView(cfg *config) (*imgopen.Opened, error) {
	if cfg.overlay {
		return openOverlay(cfg)
	}
	if cfg.spec {
		return openSpec(cfg, false)
	}
	s := cfg.open
	s.UnshareResize = true
	return openFile(s)
}

// openFile opens the image s names: a file, or another server's export
// served again (qemu-nbd's nbd driver): a node of a spec, its format
// probed unless given.
func openFile(s imgopen.Spec) (*imgopen.Opened, error) {
	if imgopen.IsNBDName(s.Path) {
		return imgopen.OpenSpec(imgopen.NBDSpec(s.Path, ""), imgopen.Spec{Format: s.Format, Cache: s.Cache, AIO: s.AIO,
			ReadOnly: s.ReadOnly, Secrets: s.Secrets, UnshareResize: s.UnshareResize, Opts: qcow2.Options{RepairLog: s.Opts.RepairLog}})
	}
	return imgopen.Open(s)
}

// openSpec opens the image spec cfg names, the export itself (a
// resize of it not shared), or with base the read-only backing node of
// -s's overlay.
func openSpec(cfg *config, base bool) (*imgopen.Opened, error) {
	if !cfg.open.ReadOnly && imgopen.SpecReadOnly(cfg.path) {
		// As qemu-nbd without -r: its writable block backend refuses
		// the node (qnbd advertised a writable export whose writes all
		// failed), with -s too (where the node is only the overlay's
		// backing file; a read-only file node under it is served).
		return nil, errors.New("Block node is read-only")
	}
	// -f (a json: name only, configure): the root's driver, over the
	// name's, as QEMU gives the options outside the name priority.
	return imgopen.OpenSpec(cfg.path, imgopen.Spec{Format: cfg.open.Format, Cache: cfg.open.Cache, AIO: cfg.open.AIO, ReadOnly: cfg.open.ReadOnly || base,
		Secrets: cfg.open.Secrets, UnshareResize: !base, Opts: qcow2.Options{RepairLog: cfg.open.Opts.RepairLog}})
}

// listen opens the listening socket; a stale Unix socket file (no server
// behind it) is replaced.
func listen(cfg *config) (net.Listener, error) {
	if cfg.activated {
		return activatedListener()
	}
	if cfg.network == "unix" {
		if fi, err := os.Lstat(cfg.addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.Dial("unix", cfg.addr); err == nil {
				c.Close()
				return nil, fmt.Errorf("%s: a server is already listening there", cfg.addr)
			}
			os.Remove(cfg.addr)
		}
		l, err := net.Listen("unix", cfg.addr)
		if err != nil {
			return nil, listenError("unix", cfg.addr, err)
		}
		cfg.socketOwned = true
		return l, nil
	}
	l, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, listenError("tcp", cfg.addr, err)
	}
	return l, nil
}

// serve runs the server until a signal, or (without -t) until its last
// client left; then it flushes and closes the image. ready, if not nil,
// is called once the socket listens.
func serve(cfg *config, stderr io.Writer, ready func()) (err error) {
	logger := log.New(stderr, "qnbd: ", log.LstdFlags)
	// Stop on a signal, or when the last client left (not persistent);
	// a signal during the shutdown forces it, one more exits (stop.go).
	// Signals are caught until serve returns, the image's final flush
	// and close included: deferred before them, so undone after them
	// (a signal there used to kill the process with the default action,
	// in the middle of the close).
	st := newStopper(logger.Printf)
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	sigDone := make(chan struct{})
	defer func() {
		signal.Stop(sigs)
		close(sigDone)
	}()
	go func() {
		for {
			select {
			case s := <-sigs:
				st.signal(s)
			case <-sigDone:
				return
			}
		}
	}()
	img, err := openImage(cfg)
	var le *loadError
	if errors.As(err, &le) {
		return le
	}
	if err != nil {
		e := &openError{image: cfg.path, err: err}
		if !cfg.spec {
			e.host, e.format = cfg.open.Path, cfg.open.Format
		}
		return e
	}
	var pidFile *os.File
	defer func() {
		if ferr := img.Dev.Flush(); ferr != nil && !cfg.open.ReadOnly {
			err = errors.Join(err, fmt.Errorf("flush: %w", ferr))
		}
		if cerr := img.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close: %w", cerr))
		}
		// The pid file goes last: whoever waits for it to vanish may
		// open the image at once, so its lock must be released by then.
		if pidFile != nil {
			os.Remove(cfg.pidFile)
			pidFile.Close() // and its lock
		}
	}()
	raw := img.Dev // the status lookups below look at the image, not the guard
	if !cfg.open.ReadOnly {
		// A raw image found by probing (a file name, or a spec without
		// driver=): as qemu-nbd, warn, and refuse writes that would
		// make it probe as another format.
		img.GuardProbed(stderr)
	}
	dev := img.Dev
	// As qemu-nbd's writethrough and directsync caches: a write is
	// flushed before it is acknowledged (for a qcow2 image the metadata
	// that maps it too, which O_DIRECT alone does not write).
	wt := cfg.open.Cache == "writethrough" || cfg.open.Cache == "directsync"
	exp := &nbd.Export{Name: cfg.name, Description: cfg.desc, Dev: dev, ReadOnly: cfg.open.ReadOnly,
		Unmap: cfg.unmap, DetectZeroes: cfg.detect, MultiConn: cfg.shared != 1, WriteThrough: wt,
		AllocationDepth: cfg.allocDepth}
	if img.ProbedRaw != "" || img.LUKS != nil || img.Image != nil && img.Image.Header().CryptMethod != 0 {
		// Sectors, as qemu-nbd advertises them: a probed raw image
		// (QEMU's raw driver aligns to them, read-only too; qnbd
		// guards its first sector when writable) and an encrypted
		// one (QEMU's crypto sectors; qnbd takes unaligned requests
		// there, read-modify-write).
		exp.MinBlock = 512
	}
	for _, name := range cfg.bitmaps {
		// As qemu-nbd -B (7.2's nbd_export_create): the first image
		// down the backing chain that has the bitmap (with -s, the
		// image under the temporary overlay), usable, or no export.
		var owner *qcow2.Image
		for im := img.Image; im != nil && owner == nil; {
			switch err := im.BitmapUsable(name); {
			case err == nil:
				owner = im
			case !errors.Is(err, qcow2.ErrNoBitmap):
				return fmt.Errorf("Bitmap '%s' is inconsistent and cannot be used", name)
			default:
				im, _ = im.Backing().(*qcow2.Image)
			}
		}
		if owner == nil {
			return fmt.Errorf("Bitmap '%s' is not found", name)
		}
		exp.Bitmaps = append(exp.Bitmaps, nbd.Bitmap{Name: name, Source: dirtyBitmap{owner, name}})
	}
	if img.Image != nil {
		exp.Status = nbdqcow2.Status{Image: img.Image}
	} else if img.VHD != nil {
		exp.Status = vhdStatus{img.VHD}
	} else if img.VMDK != nil {
		exp.Status = vmdkStatus{img.VMDK}
	} else if im, off := imgopen.RawNode(raw); im != nil {
		// A raw window over a qcow2 node: the node's status.
		exp.Status = nbdqcow2.Node{Image: im, Offset: off}
	} else if l, ok := imgopen.RawNodeLayer(raw); ok {
		// A raw node over a VMDK or VHD node: the node's own status, as
		// QEMU's raw driver passes it through.
		exp.Status = rawNodeStatus{l}
	} else if dm, ok := raw.(block.DataMapper); ok {
		exp.Status = rawStatus{dm}
	}
	srv := &nbd.Server{Exports: []*nbd.Export{exp}, TLS: cfg.tls, MaxConns: cfg.shared, Logf: logger.Printf,
		HandshakeLimit: time.Duration(cfg.handshake) * time.Second}
	if cfg.handshake == 0 {
		srv.HandshakeLimit = -1
	}
	if cfg.verbose {
		srv.Debugf = logger.Printf
	}
	l, err := listen(cfg)
	if err != nil {
		return err
	}
	if cfg.socketOwned {
		defer os.Remove(cfg.addr)
	}
	if cfg.pidFile != "" {
		if pidFile, err = writePidFile(cfg.pidFile); err != nil {
			l.Close()
			return err
		} // removed after the image is closed (above)
	}

	quit := st.quit
	if !cfg.persistent {
		// A connection that never negotiated (nc -z, a port scan, a
		// readiness probe) is no client: it neither stops a server
		// that has served none yet nor counts as one (qemu-nbd's
		// "nbd: Fix regression on resiliency to port scan"). Once a
		// client was served, the server stops when nothing is open.
		srv.OnClose = func(open, served int) {
			if open == 0 && served > 0 {
				quit("last client disconnected")
			}
		}
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	if cfg.verbose {
		logger.Printf("serving %s (%s, %s) as export %q on %s %s", cfg.path, img.Format(), map[bool]string{true: "read-only", false: "read-write"}[cfg.open.ReadOnly], cfg.name, cfg.network, l.Addr())
	}
	if ready != nil {
		ready()
	}
	var why string
	select {
	case why = <-st.stop:
	case err := <-served:
		why = fmt.Sprintf("accept: %v", err)
		quit(why) // a signal from now on forces the shutdown
	}
	if cfg.verbose {
		logger.Printf("shutting down: %s", why)
	}
	ctx, cancel := context.WithTimeout(st.force, shutdownGrace)
	defer cancel()
	go func() {
		// A forced shutdown does not wait out a throttled backlog: the
		// requests still waiting for a throttle node's limits go through.
		<-ctx.Done()
		img.ReleaseThrottles()
	}()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Printf("shutdown: %v (connections closed with requests in flight)", err)
	}
	return nil
}

// writePidFile writes this process's id to path and keeps the file open
// and locked, as QEMU's qemu_write_pidfile does: a second server given
// the same --pid-file fails ("Cannot lock pid file") instead of
// overwriting it (the first would remove the second's pid file at its
// exit). The lock is a POSIX record lock (lockf), which QEMU takes too.
func writePidFile(path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("Could not create '%s': %s", path, errnoText(err))
		}
		lk := syscall.Flock_t{Type: syscall.F_WRLCK}
		if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
			f.Close()
			return nil, fmt.Errorf("Cannot lock pid file: %s", errnoText(err))
		}
		// The holder may have removed the file between our open and
		// lock: then the lock is on a file no one else finds.
		var a, b syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &a) != nil || syscall.Stat(path, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
			f.Close()
			continue
		}
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, fmt.Errorf("Failed to write pid file: %w", err)
		}
		if _, err := f.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("Failed to write pid file: %w", err)
		}
		return f, nil
	}
}

// dirtyBitmap is an image's dirty bitmap as an export's metadata context.
type dirtyBitmap struct {
	im   *qcow2.Image
	name string
}

func (d dirtyBitmap) DirtyRun(off, n int64) (bool, int64, error) {
	return d.im.DirtyRun(d.name, off, n)
}
