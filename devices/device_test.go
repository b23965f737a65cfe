package devices

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
)

// TestIdentWrap pins the error conventions every kind shares.
func TestIdentWrap(t *testing.T) {
	id := &ident{kind: target.KindTelnet, addr: "ts:23"}
	other := errors.New("boom")
	reset := fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
	if id.wrap("read", nil) != nil {
		t.Error("wrap(nil) is not nil")
	}
	if err := id.wrap("read", io.EOF); err != io.EOF {
		t.Errorf("read EOF: %v, want io.EOF itself", err)
	}
	if err := id.wrap("read", reset); !errors.Is(err, io.EOF) || !errors.Is(err, syscall.ECONNRESET) || err.Error() != "devices: telnet ts:23: read: EOF (read tcp: connection reset by peer)" {
		t.Errorf("read reset: %v", err)
	}
	if err := id.wrap("write", reset); errors.Is(err, io.EOF) || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("write reset: %v, want the reset without io.EOF", err)
	}
	if err := id.wrap("DTR", other); err.Error() != "devices: telnet ts:23: DTR: boom" || !errors.Is(err, other) {
		t.Errorf("DTR: %v", err)
	}
	id.closed.Store(true)
	for _, err := range []error{io.EOF, reset, other} {
		if got := id.wrap("read", err); !errors.Is(got, ErrClosed) || !errors.Is(got, net.ErrClosed) || got.Error() != "devices: telnet ts:23: devices: device closed" {
			t.Errorf("after Close, read %v: %v, want ErrClosed", err, got)
		}
	}
}
