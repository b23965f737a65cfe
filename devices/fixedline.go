package devices

import (
	"context"
	"log/slog"
	"sync"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// fixedLine is the rfc2217.Port of a device whose line settings cannot be
// changed from here (a Moxa NPort in TCP Server mode, a telnet remote): the
// settings in effect are the configured ones. A request for anything else
// is recorded, logged once per Device, and answered with the configured
// settings, which is what an RFC 2217 access server does when it cannot
// take a value (RFC 2217 §3: the reply is the value in effect).
type fixedLine struct {
	kind       target.Kind
	addr       string
	log        *slog.Logger
	configured rfc2217.Settings // immutable after construction

	mu       sync.Mutex
	mismatch string // guarded by mu: the latest request the line cannot take
	logged   bool   // guarded by mu: the first mismatch was logged
}

func newFixedLine(k target.Kind, addr string, configured rfc2217.Settings, log *slog.Logger) fixedLine {
	return fixedLine{kind: k, addr: addr, log: log, configured: configured}
}

// SetSettings records s and returns the configured settings, which stay in
// effect. It never fails.
func (f *fixedLine) SetSettings(_ context.Context, s rfc2217.Settings) (rfc2217.Settings, error) {
	want := s.Merge(f.configured)
	if want == f.configured {
		return f.configured, nil
	}
	msg := "asked for " + want.String() + ", line is fixed at " + f.configured.String() +
		" (" + f.kind.String() + " devices cannot change line settings; change them on the device server)"
	f.mu.Lock()
	f.mismatch = msg
	first := !f.logged
	f.logged = true
	f.mu.Unlock()
	if first {
		f.log.Warn("devices: line settings mismatch", "requested", want.String(), "configured", f.configured.String(), "detail", msg)
	} else {
		f.log.Debug("devices: line settings mismatch", "requested", want.String(), "configured", f.configured.String())
	}
	return f.configured, nil
}

// Mismatch describes the latest settings request the device could not
// take, or returns "" if there was none. The bridge shows it in status.
func (f *fixedLine) Mismatch() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mismatch
}

// Configured returns the settings the device is configured for.
func (f *fixedLine) Configured() rfc2217.Settings { return f.configured }

func (f *fixedLine) SetDTR(context.Context, bool) error {
	return notSupported(f.kind, f.addr, "DTR")
}

func (f *fixedLine) SetRTS(context.Context, bool) error {
	return notSupported(f.kind, f.addr, "RTS")
}

func (f *fixedLine) SetBreak(context.Context, bool) error {
	return notSupported(f.kind, f.addr, "BREAK")
}

// Purge is a no-op that succeeds: the device server's buffers cannot be
// reached over its data port and the Device keeps no buffer of its own.
// (RFC 2217 PURGE-DATA is advisory; guests issue it on every open, so
// ErrNotSupported here would only produce noise.)
func (f *fixedLine) Purge(context.Context, rfc2217.PurgeTarget) error { return nil }

func (f *fixedLine) ModemState(context.Context) (rfc2217.ModemState, error) {
	return 0, notSupported(f.kind, f.addr, "modem state")
}
