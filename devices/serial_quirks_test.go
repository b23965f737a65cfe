//go:build linux

package devices

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.bug.st/serial"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// quirkyPort is a go.bug.st/serial Port whose Read replays a script, to
// pin down the normalisation of its quirks.
type quirkyPort struct {
	serial.Port // nil: other methods are not called
	reads       []func(p []byte) (int, error)
}

func (q *quirkyPort) Read(p []byte) (int, error) {
	r := q.reads[0]
	q.reads = q.reads[1:]
	return r(p)
}

func TestSerialReadNormalisesQuirks(t *testing.T) {
	// A real PortError{PortClosed}: what go.bug.st/serial returns from a
	// Read on a port that is closed or hung up.
	a, _ := devicetest.SocatPTY(t)
	p, err := serial.Open(a, &serial.Mode{BaudRate: 9600})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	_, portClosed := p.Read(make([]byte, 1))
	var pe *serial.PortError
	if !errors.As(portClosed, &pe) || pe.Code() != serial.PortClosed {
		t.Fatalf("setup: Read on a closed port gave %v", portClosed)
	}

	d := &serialDevice{path: "/dev/ttyQ", log: slog.New(slog.DiscardHandler), port: &quirkyPort{reads: []func([]byte) (int, error){
		func([]byte) (int, error) { return 0, nil }, // read timeout: must not surface
		func([]byte) (int, error) { return 0, nil },
		func(p []byte) (int, error) { return copy(p, "ok"), nil },
		func([]byte) (int, error) { return 0, portClosed }, // hung up, not closed by us
	}}}
	buf := make([]byte, 8)
	n, err := d.Read(buf)
	if err != nil || string(buf[:n]) != "ok" {
		t.Fatalf("Read = %q, %v; want \"ok\" with the (0, nil) timeouts skipped", buf[:n], err)
	}
	if _, err := d.Read(buf); err != io.EOF {
		t.Errorf("Read on a hung-up port: %v, want io.EOF", err)
	}
	// After our own Close the same PortError means ErrClosed.
	d.closed.Store(true)
	d.port = &quirkyPort{reads: []func([]byte) (int, error){func([]byte) (int, error) { return 0, portClosed }}}
	if _, err := d.Read(buf); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v, want ErrClosed", err)
	}
}

// portErr gives PortError a chain callers can test.
func TestSerialOpenErrors(t *testing.T) {
	_, err := Open(t.Context(), mustParse(t, "/dev/no-such-tty-xyz"), Options{})
	if err == nil || err.Error() != "devices: serial /dev/no-such-tty-xyz: open: no such file or directory" {
		t.Errorf("Open(missing): %v", err)
	}
	// Not a tty.
	_, err = Open(t.Context(), mustParse(t, "/dev/null"), Options{})
	if err == nil {
		t.Fatal("Open(/dev/null) succeeded")
	}
	t.Logf("Open(/dev/null): %v", err)
}

// Close unblocks a Write that the tty cannot take (nobody drains the
// other side of the pty pair, so its buffers fill up).
func TestSerialCloseUnblocksWrite(t *testing.T) {
	a, _ := devicetest.SocatPTY(t)
	dev, err := Open(t.Context(), mustParse(t, a), Options{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := dev.Write(make([]byte, 16<<20))
		errc <- err
	}()
	waitBlocked(t, "devices.(*serialDevice).Write")
	select {
	case err := <-errc:
		t.Fatalf("16 MiB Write into an undrained pty returned: %v", err)
	default:
	}
	dev.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("blocked Write after Close: %v, want ErrClosed", err)
		}
	case <-time.After(testwait.Timeout):
		t.Fatal("Close did not unblock Write")
	}
}
