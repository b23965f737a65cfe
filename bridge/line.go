package bridge

import (
	"context"
	"fmt"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// A link is a vspc.LineBackend: the guest's RFC 2217 requests reach the
// device. While the device is away, settings are remembered and applied
// when it comes back, and the modem state reads as all lines down (the
// guest sees carrier loss).

var _ rfc2217.Port = (*link)(nil)

func (l *link) device() (dev rfc2217.Port, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dev == nil {
		return nil, false
	}
	return l.dev, true
}

// SetSettings implements rfc2217.Port. While the device is away a fixed
// line answers as it does when the device is there (l.fixed is the very
// value the device answers with), and other kinds (an nport target with a
// command port among them) answer with what will be applied when the
// device comes back.
func (l *link) SetSettings(ctx context.Context, s rfc2217.Settings) (rfc2217.Settings, error) {
	l.mu.Lock()
	l.settings = s.Merge(l.settings)
	want := l.settings.Merge(l.initial)
	dev := l.dev
	l.mu.Unlock()
	switch {
	case dev != nil:
		return dev.SetSettings(ctx, s)
	case l.fixed != nil && l.target.FixedLine():
		return l.fixed.SetSettings(ctx, s)
	}
	return want, nil // applied on reconnect
}

func (l *link) control(what string, f func(p rfc2217.Port) error) error {
	dev, ok := l.device()
	if !ok {
		return fmt.Errorf("bridge: %s: device %s not connected", what, l.key)
	}
	return f(dev)
}

// SetDTR implements rfc2217.Port.
func (l *link) SetDTR(ctx context.Context, on bool) error {
	return l.control("DTR", func(p rfc2217.Port) error { return p.SetDTR(ctx, on) })
}

// SetRTS implements rfc2217.Port.
func (l *link) SetRTS(ctx context.Context, on bool) error {
	return l.control("RTS", func(p rfc2217.Port) error { return p.SetRTS(ctx, on) })
}

// SetBreak implements rfc2217.Port.
func (l *link) SetBreak(ctx context.Context, on bool) error {
	return l.control("BREAK", func(p rfc2217.Port) error { return p.SetBreak(ctx, on) })
}

// Purge implements rfc2217.Port.
func (l *link) Purge(ctx context.Context, what rfc2217.PurgeTarget) error {
	return l.control("PURGE", func(p rfc2217.Port) error { return p.Purge(ctx, what) })
}

// ModemState implements rfc2217.Port: all lines down while the device is
// away (carrier loss), else what the device reports.
func (l *link) ModemState(ctx context.Context) (rfc2217.ModemState, error) {
	dev, ok := l.device()
	if !ok {
		return 0, nil
	}
	return dev.ModemState(ctx)
}

// lineStater is a device that reports line events (an NPort's command
// port): parity and framing errors, overruns, BREAK received.
type lineStater interface {
	LineState(ctx context.Context) (rfc2217.LineState, error)
}

// LineState passes on the line events the device reported since the last
// call (vspc notifies the guest under its line-state mask); none while the
// device is away or for devices that report none.
func (l *link) LineState(ctx context.Context) (rfc2217.LineState, error) {
	dev, ok := l.device()
	if !ok {
		return 0, nil
	}
	if ls, ok := raw(dev).(lineStater); ok {
		return ls.LineState(ctx)
	}
	return 0, nil
}
