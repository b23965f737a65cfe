package devices

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// payload returns n deterministic bytes, a quarter of them 0xFF and many
// CR, LF and NUL, the bytes protocols like to eat.
func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		switch r.IntN(8) {
		case 0, 1:
			b[i] = 0xFF
		case 2:
			b[i] = []byte{'\r', '\n', 0, 0x11, 0x13}[r.IntN(5)]
		default:
			b[i] = byte(r.Uint32())
		}
	}
	return b
}

// exchange sends a to the far end through dev and b from the far end to
// dev at the same time and checks that both arrive intact (SHA-256).
func exchange(t *testing.T, dev io.ReadWriter, far io.ReadWriter, a, b []byte) {
	t.Helper()
	exchangeDirs(t, dev, far, a, b)
}

// exchangeSequential is exchange one direction after the other. Use it
// when two socat processes relay in a chain (socat TCP-LISTEN ↔ pty ↔
// socat pty pair): each socat writes with blocking writes, and with both
// directions saturated the two deadlock, each blocked writing to the
// other (observed with 1 MiB each way). A real serial line is far slower.
func exchangeSequential(t *testing.T, dev io.ReadWriter, far io.ReadWriter, a, b []byte) {
	t.Helper()
	exchangeDirs(t, dev, far, a, nil)
	exchangeDirs(t, dev, far, nil, b)
}

func exchangeDirs(t *testing.T, dev io.ReadWriter, far io.ReadWriter, a, b []byte) {
	t.Helper()
	type result struct {
		what string
		sum  [32]byte
		err  error
	}
	res := make(chan result, 4)
	var wg sync.WaitGroup
	readN := func(what string, r io.Reader, n int) {
		h := sha256.New()
		_, err := io.CopyN(h, r, int64(n))
		var s [32]byte
		copy(s[:], h.Sum(nil))
		res <- result{what: what, sum: s, err: err}
	}
	if len(a) > 0 {
		wg.Go(func() {
			_, err := dev.Write(a)
			res <- result{what: "device write", err: err}
		})
		wg.Go(func() { readN("far read", far, len(a)) })
	}
	if len(b) > 0 {
		wg.Go(func() {
			_, err := far.Write(b)
			res <- result{what: "far write", err: err}
		})
		wg.Go(func() { readN("device read", dev, len(b)) })
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(testwait.Timeout):
		t.Fatalf("exchange of %d and %d bytes stuck after %v", len(a), len(b), testwait.Timeout)
	}
	close(res)
	for r := range res {
		if r.err != nil {
			t.Errorf("%s: %v", r.what, r.err)
		}
		switch r.what {
		case "device read":
			if r.sum != sha256.Sum256(b) {
				t.Errorf("device read: %d bytes from the far end arrived changed", len(b))
			}
		case "far read":
			if r.sum != sha256.Sum256(a) {
				t.Errorf("far read: %d bytes from the device arrived changed", len(a))
			}
		}
	}
}

// logRecorder is a slog.Handler that keeps the records it gets.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record // guarded by mu
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}

func (h *logRecorder) count(level slog.Level, msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Level == level && r.Message == msg {
			n++
		}
	}
	return n
}

// readErr reads from r until it fails and returns the error. It fails the
// test if r is still delivering or blocked after testwait.Timeout: how
// promptly a device notices is not a unit test's business.
func readErr(t *testing.T, r io.Reader) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := r.Read(buf); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(testwait.Timeout):
		t.Fatalf("Read did not fail within %v", testwait.Timeout)
		return errors.New("unreachable")
	}
}

// waitBlocked waits until a goroutine whose stack holds frame (a function
// name, such as "devices.checkClose.func1") is blocked: in a channel
// operation, a lock, the network poller or a system call, not running.
// It is how a test knows a Read or Write is pending before it acts on
// it, without sleeping.
func waitBlocked(t *testing.T, frame string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	testwait.For(t, "a goroutine blocked in "+frame, func() bool {
		n := runtime.Stack(buf, true)
		for g := range bytes.SplitSeq(buf[:n], []byte("\n\n")) {
			header, _, _ := bytes.Cut(g, []byte("\n"))
			if bytes.Contains(g, []byte(frame+"(")) &&
				!bytes.Contains(header, []byte("[running]")) && !bytes.Contains(header, []byte("[runnable]")) {
				return true
			}
		}
		return false
	})
}

func mustParse(t *testing.T, uri string) target.Target {
	t.Helper()
	tg, err := target.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// checkClose: Close unblocks a pending Read, is idempotent, and later
// calls report ErrClosed.
func checkClose(t *testing.T, dev Device) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := dev.Read(make([]byte, 10))
		errc <- err
	}()
	waitBlocked(t, "devices.checkClose.func1")
	if err := dev.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read pending at Close returned %v, want ErrClosed", err)
		}
	case <-time.After(testwait.Timeout):
		t.Fatal("Close did not unblock Read")
	}
	if err := dev.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := dev.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close: %v, want ErrClosed", err)
	}
}

// readN reads exactly n bytes from r, failing the test if they have not
// come within testwait.Timeout (the reader is unblocked by the test's
// cleanups closing r).
func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b := make([]byte, n)
		k, err := io.ReadFull(r, b)
		ch <- result{b[:k], err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatalf("read %d of %d bytes: %v", len(res.b), n, res.err)
		}
		return res.b
	case <-time.After(testwait.Timeout):
		t.Fatalf("%d bytes did not come within %v", n, testwait.Timeout)
		return nil
	}
}
