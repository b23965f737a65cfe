//go:build linux

package devices

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// A socat pty pair: the device opens one end as serial://, the test the
// other. What SetSettings applies is on the tty (termios), what it reports
// is what the tty really has, and 1 MiB passes each way at once.
func TestSerialSocatPTY(t *testing.T) {
	a, b := devicetest.SocatPTY(t)
	dev, err := Open(t.Context(), mustParse(t, "serial://"+a+"?baud=9600&databits=8&parity=none&stopbits=1&flow=none"), Options{Logger: devicetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	ctx := t.Context()
	tty := func() devicetest.TTYState { t.Helper(); return devicetest.TTY(t, a) }
	if s := tty(); s.Speed != 9600 || s.StopBits != 1 {
		t.Errorf("pty after Open: %+v, want 9600 1 stop bit", s)
	}

	set := func(req rfc2217.Settings) rfc2217.Settings {
		t.Helper()
		got, err := dev.SetSettings(ctx, req)
		if err != nil {
			t.Fatalf("SetSettings(%v): %v", req, err)
		}
		return got
	}
	if got := set(rfc2217.Settings{Baud: 57600, StopSize: rfc2217.Stop2}); got.Baud != 57600 || got.StopSize != rfc2217.Stop2 {
		t.Errorf("SetSettings(57600, 2 stop) = %v", got)
	}
	if s := tty(); s.Speed != 57600 || s.StopBits != 2 {
		t.Errorf("pty after 57600/2: %+v", s)
	}
	if got := set(rfc2217.Settings{Baud: 115200}); got.Baud != 115200 || got.StopSize != rfc2217.Stop2 {
		t.Errorf("SetSettings(115200) = %v, want 115200 with 2 stop bits kept", got)
	}
	if s := tty(); s.Speed != 115200 || s.StopBits != 2 {
		t.Errorf("pty after 115200: %+v", s)
	}
	// A speed outside the Bnnn table (TCSETS2/BOTHER).
	if got := set(rfc2217.Settings{Baud: 250000}); got.Baud != 250000 || tty().Speed != 250000 {
		t.Errorf("SetSettings(250000) = %v, pty %+v", got, tty())
	}
	// A pty forces 8 data bits and no parity: the reply is the truth.
	if got := set(rfc2217.Settings{DataSize: 7, Parity: rfc2217.ParityEven}); got.DataSize != 8 || got.Parity != rfc2217.ParityNone {
		t.Errorf("SetSettings(7E) on a pty = %v, want 8N (what the pty has)", got)
	}
	// 1.5 stop bits with 8 data bits cannot be done: stop bits stay.
	if got := set(rfc2217.Settings{Baud: 115200, StopSize: rfc2217.Stop15}); got.StopSize != rfc2217.Stop2 || tty().StopBits != 2 {
		t.Errorf("SetSettings(1.5 stop with 8 data bits) = %v, want the 2 in effect", got)
	}
	if got := set(rfc2217.Settings{StopSize: rfc2217.Stop1}); got.StopSize != rfc2217.Stop1 || tty().StopBits != 1 {
		t.Errorf("SetSettings(1 stop) = %v", got)
	}
	// Flow control through the second descriptor.
	if got := set(rfc2217.Settings{Flow: rfc2217.FlowHardware}); got.Flow != rfc2217.FlowHardware || !tty().CRTSCTS {
		t.Errorf("SetSettings(rts/cts) = %v, pty %+v", got, tty())
	}
	if got := set(rfc2217.Settings{Flow: rfc2217.FlowXONXOFF}); got.Flow != rfc2217.FlowXONXOFF || !tty().IXON || tty().CRTSCTS {
		t.Errorf("SetSettings(xon/xoff) = %v, pty %+v", got, tty())
	}
	if got := set(rfc2217.Settings{Flow: rfc2217.FlowNone}); got.Flow != rfc2217.FlowNone || tty().IXON || tty().CRTSCTS {
		t.Errorf("SetSettings(flow none) = %v, pty %+v", got, tty())
	}
	if _, err := dev.SetSettings(ctx, rfc2217.Settings{DataSize: 9}); !errors.Is(err, ErrBadSetting) {
		t.Errorf("SetSettings(9 data bits): %v, want ErrBadSetting", err)
	}

	// Modem lines do not exist on a pty: not supported, not fatal.
	if err := dev.SetDTR(ctx, true); !errors.Is(err, rfc2217.ErrNotSupported) {
		t.Errorf("SetDTR on a pty: %v, want ErrNotSupported", err)
	}
	if err := dev.SetRTS(ctx, true); !errors.Is(err, rfc2217.ErrNotSupported) {
		t.Errorf("SetRTS on a pty: %v, want ErrNotSupported", err)
	}
	if _, err := dev.ModemState(ctx); !errors.Is(err, rfc2217.ErrNotSupported) {
		t.Errorf("ModemState on a pty: %v, want ErrNotSupported", err)
	}
	for _, on := range []bool{true, false} {
		if err := dev.SetBreak(ctx, on); err != nil {
			t.Errorf("SetBreak(%v): %v", on, err)
		}
	}
	if err := dev.Purge(ctx, rfc2217.PurgeBoth); err != nil {
		t.Errorf("Purge: %v", err)
	}

	far := openTTY(t, b)
	exchange(t, dev, far, payload(1<<20, 21), payload(1<<20, 22))
	checkClose(t, dev)
}

// Fault: the pty goes away (socat killed) mid-stream: Read fails promptly
// and says so; after socat is back, Open works on the new pty.
func TestSerialFaultRestart(t *testing.T) {
	pair := devicetest.StartSocatPTY(t)
	tg := mustParse(t, "serial://"+pair.A+"?baud=115200")
	dev, err := Open(t.Context(), tg, Options{Logger: devicetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	far := openTTY(t, pair.B)
	exchange(t, dev, far, []byte("before"), []byte("before"))
	if _, err := far.Write(payload(2048, 23)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pair.Stop()
	err = readErr(t, dev)
	t.Logf("Read after the pty went away (%v): %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, io.EOF) {
		t.Errorf("Read error %v, want io.EOF (possibly wrapped)", err)
	}
	if _, err := dev.Write([]byte("x")); err == nil {
		t.Errorf("Write to a hung-up pty succeeded")
	}
	dev.Close()
	far.Close()

	_, err = Open(t.Context(), tg, Options{})
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "devices: serial "+pair.A) {
		t.Errorf("Open while gone: %v, want ErrNotExist naming the path", err)
	}

	pair.Restart(t)
	dev2, err := Open(t.Context(), tg, Options{Logger: devicetest.Logger(t)})
	if err != nil {
		t.Fatalf("Open after restart: %v", err)
	}
	defer dev2.Close()
	exchange(t, dev2, openTTY(t, pair.B), []byte("after \xff"), []byte("after \xff"))
}
