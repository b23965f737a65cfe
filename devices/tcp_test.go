//go:build linux

package devices

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

var moxa8N1 = rfc2217.Settings{Baud: 115200, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone}

// A Moxa NPort in TCP Server mode, played by socat TCP-LISTEN ↔ pty:
// bytes pass both ways untouched, line settings stay what the route says.
func TestTCPSocatMoxa(t *testing.T) {
	for _, scheme := range []string{"tcp", "nport"} {
		t.Run(scheme, func(t *testing.T) {
			a, b := devicetest.SocatPTY(t)
			addr := devicetest.SocatTCPServer(t, a)
			rec := &logRecorder{}
			uri := scheme + "://" + addr
			if scheme == "nport" {
				uri += "?cmd=none" // data port only
			}
			dev, err := Open(t.Context(), mustParse(t, uri), Options{Initial: moxa8N1, Logger: slog.New(rec)})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			far := openTTY(t, b)
			exchangeSequential(t, dev, far, payload(1<<20, 1), payload(1<<20, 2))

			ctx := t.Context()
			got, err := dev.SetSettings(ctx, rfc2217.Settings{Baud: 57600, StopSize: rfc2217.Stop2})
			if err != nil || got != moxa8N1 {
				t.Fatalf("SetSettings(57600 2 stop) = %v, %v; want the configured %v", got, err, moxa8N1)
			}
			if got, err := dev.SetSettings(ctx, rfc2217.Settings{Baud: 9600}); err != nil || got != moxa8N1 {
				t.Fatalf("SetSettings(9600) = %v, %v; want %v", got, err, moxa8N1)
			}
			if got, err := dev.SetSettings(ctx, moxa8N1); err != nil || got != moxa8N1 {
				t.Fatalf("SetSettings(configured) = %v, %v", got, err)
			}
			if n := rec.count(slog.LevelWarn, "devices: line settings mismatch"); n != 1 {
				t.Errorf("mismatch logged %d times at warn level, want once", n)
			}
			m, ok := dev.(interface{ Mismatch() string })
			if !ok {
				t.Fatalf("%T has no Mismatch method", dev)
			}
			if s := m.Mismatch(); !strings.Contains(s, "9600") || !strings.Contains(s, "115200 8N1") {
				t.Errorf("Mismatch() = %q, want the last request and the configured settings", s)
			}
			for name, err := range map[string]error{
				"SetDTR":   dev.SetDTR(ctx, true),
				"SetRTS":   dev.SetRTS(ctx, false),
				"SetBreak": dev.SetBreak(ctx, true),
			} {
				if !errors.Is(err, rfc2217.ErrNotSupported) {
					t.Errorf("%s: %v, want ErrNotSupported", name, err)
				}
			}
			if _, err := dev.ModemState(ctx); !errors.Is(err, rfc2217.ErrNotSupported) {
				t.Errorf("ModemState: %v, want ErrNotSupported", err)
			}
			if err := dev.Purge(ctx, rfc2217.PurgeBoth); err != nil {
				t.Errorf("Purge: %v, want a no-op", err)
			}
			checkClose(t, dev)
		})
	}
}

// Raw ser2net accepter (another NPort TCP Server look-alike).
func TestTCPSer2netRaw(t *testing.T) {
	a, b := devicetest.SocatPTY(t)
	addr := devicetest.Ser2net(t, "tcp", a)
	dev, err := Open(t.Context(), mustParse(t, "tcp://"+addr), Options{Initial: moxa8N1, Logger: devicetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	far := openTTY(t, b)
	exchange(t, dev, far, payload(256<<10, 3), payload(256<<10, 4))
}

// Fault: the device server dies mid-stream; Read fails promptly; once it
// is back, Open works again.
func TestTCPFaultRestart(t *testing.T) {
	pair := devicetest.StartSocatPTY(t)
	srv := devicetest.StartSocatTCPServer(t, pair.A)
	tg := mustParse(t, "tcp://"+srv.Addr)
	dev, err := Open(t.Context(), tg, Options{Logger: devicetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	far := openTTY(t, pair.B)
	exchange(t, dev, far, []byte("hello device"), []byte("hello bridge"))

	talkCtx, stopTalking := context.WithCancel(t.Context())
	var talker sync.WaitGroup
	var talked atomic.Int64
	defer talker.Wait()
	defer stopTalking()
	talker.Go(func() { // keep the device talking while it dies
		for talkCtx.Err() == nil {
			if _, err := far.Write(payload(512, 5)); err != nil {
				return
			}
			talked.Add(1)
			time.Sleep(time.Millisecond) // paces the talker
		}
	})
	testwait.For(t, "the device to be talking", func() bool { return talked.Load() >= 4 })
	start := time.Now()
	srv.Stop()
	err = readErr(t, dev)
	t.Logf("Read after the server died (%v later): %v", time.Since(start).Round(time.Millisecond), err)
	if errors.Is(err, ErrClosed) {
		t.Errorf("Read error %v claims we closed the device", err)
	}
	if !errors.Is(err, io.EOF) && !strings.HasPrefix(err.Error(), "devices: tcp ") {
		t.Errorf("Read error %q is neither io.EOF nor names the device", err)
	}
	dev.Close()

	// While it is down, Open fails fast and says what it tried.
	_, err = Open(t.Context(), tg, Options{DialTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "devices: tcp "+srv.Addr) {
		t.Errorf("Open while down: %v, want an error naming tcp %s", err, srv.Addr)
	}

	srv.Restart(t)
	dev2, err := Open(t.Context(), tg, Options{Logger: devicetest.Logger(t)})
	if err != nil {
		t.Fatalf("Open after restart: %v", err)
	}
	defer dev2.Close()
	// What the talker left in the pty may still arrive: exchangeMarked
	// looks past it for its marker.
	stopTalking()
	talker.Wait()
	exchangeMarked(t, dev2, far)
}

// exchangeMarked checks a fresh path in both directions when stale bytes
// may still be in flight from before: it looks for a marker.
func exchangeMarked(t *testing.T, dev io.ReadWriter, far io.ReadWriter) {
	t.Helper()
	marker := []byte("\x00MARK-after-restart\xff")
	if _, err := dev.Write(marker); err != nil {
		t.Fatal(err)
	}
	readUntil(t, far, marker)
	if _, err := far.Write(marker); err != nil {
		t.Fatal(err)
	}
	readUntil(t, dev, marker)
}

// readUntil reads r until marker has come, failing the test if r fails
// first or it has not come within testwait.Timeout.
func readUntil(t *testing.T, r io.Reader, marker []byte) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		var seen []byte
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			seen = append(seen, buf[:n]...)
			if strings.Contains(string(seen), string(marker)) {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waiting for %q: %v", marker, err)
		}
	case <-time.After(testwait.Timeout):
		t.Fatalf("marker %q did not arrive within %v", marker, testwait.Timeout)
	}
}

// The bridge's dialer is used, and its refusal comes back wrapped.
func TestOpenUsesInjectedDialer(t *testing.T) {
	errPolicy := errors.New("policy: not in connect_allow")
	var asked string
	_, err := Open(t.Context(), mustParse(t, "nport://10.9.8.7"), Options{
		Dial: func(_ context.Context, network, addr string) (net.Conn, error) {
			asked = network + " " + addr
			return nil, errPolicy
		},
	})
	if !errors.Is(err, errPolicy) {
		t.Fatalf("Open: %v, want the dialer's error", err)
	}
	if asked != "tcp 10.9.8.7:4001" {
		t.Errorf("dialer asked for %q, want tcp 10.9.8.7:4001", asked)
	}
	if want := "devices: nport 10.9.8.7:4001: policy"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
}
