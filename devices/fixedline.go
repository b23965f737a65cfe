package devices

import (
	"context"
	"log/slog"
	"sync"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// FixedLine is the line control of a device whose line settings cannot be
// changed from here (a Moxa NPort in TCP Server mode, a telnet remote): the
// settings in effect are the configured ones. A request for anything else
// is recorded, logged once, and answered with the configured settings,
// which is what an RFC 2217 access server does when it cannot take a value
// (RFC 2217 §3: the reply is the value in effect).
//
// The answer depends on nothing but the configured settings and the
// request, never on a connection, so one FixedLine can stand for a device
// whether or not it is connected: the bridge makes one per link, passes it
// to every Open (Options.Line) and consults it itself while the device is
// away. The guest then gets the same answer, and status the same mismatch,
// with the device away or present, and the mismatch is logged once per
// link rather than once per reconnect.
//
// A field the configured settings leave unset (a VM-named tcp:// target
// without a settings query) is not known: the answer leaves it unset too
// (the access server then assumes the guest's value took), and a request
// for it is no mismatch.
type FixedLine struct {
	kind       target.Kind
	addr       string
	log        func() *slog.Logger // the logger, built when something is logged
	configured rfc2217.Settings    // immutable after construction

	mu       sync.Mutex
	mismatch string          // guarded by mu: the latest request the line cannot take
	logged   bool            // guarded by mu: the first mismatch was logged
	warned   map[string]bool // guarded by mu: one-time warnings given (see once)
}

// NewFixedLine returns the fixed line of the device t names, configured to
// the given settings (zero fields: unknown). log receives the mismatch
// lines; nil discards them.
func NewFixedLine(t target.Target, configured rfc2217.Settings, log *slog.Logger) *FixedLine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return NewFixedLineLazy(t, configured, func() *slog.Logger { return log })
}

// NewFixedLineLazy is NewFixedLine with a logger built only when a
// mismatch is logged: a FixedLine lives as long as its link, and a logger
// with the link's context costs about 200 bytes that an idle port would
// otherwise keep (issue 17). log must not be nil.
func NewFixedLineLazy(t target.Target, configured rfc2217.Settings, log func() *slog.Logger) *FixedLine {
	return &FixedLine{kind: t.Kind, addr: t.Addr(), log: log, configured: configured}
}

// SetSettings records s and returns the configured settings, which stay in
// effect. It never fails.
func (f *FixedLine) SetSettings(_ context.Context, s rfc2217.Settings) (rfc2217.Settings, error) {
	// The fields s sets that the configured settings know and differ in:
	// s over them differs from them over s exactly there.
	if s.Merge(f.configured) == f.configured.Merge(s) {
		return f.configured, nil
	}
	want := s.Merge(f.configured)
	msg := "asked for " + want.String() + ", line is fixed at " + f.configured.String() +
		" (" + f.kind.String() + " devices cannot change line settings; change them on the device server)"
	f.mu.Lock()
	f.mismatch = msg
	first := !f.logged
	f.logged = true
	f.mu.Unlock()
	if first {
		f.log().Warn("devices: line settings mismatch", "requested", want.String(), "configured", f.configured.String(), "detail", msg)
	} else {
		f.log().Debug("devices: line settings mismatch", "requested", want.String(), "configured", f.configured.String())
	}
	return f.configured, nil
}

// Mismatch describes the latest settings request the line could not take,
// or returns "" if there was none. The bridge shows it in status.
func (f *FixedLine) Mismatch() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mismatch
}

func (f *FixedLine) SetDTR(context.Context, bool) error {
	return notSupported(f.kind, f.addr, "DTR")
}

func (f *FixedLine) SetRTS(context.Context, bool) error {
	return notSupported(f.kind, f.addr, "RTS")
}

func (f *FixedLine) SetBreak(context.Context, bool) error {
	return notSupported(f.kind, f.addr, "BREAK")
}

// Purge is a no-op that succeeds: the device server's buffers cannot be
// reached over its data port and the Device keeps no buffer of its own.
// (RFC 2217 PURGE-DATA is advisory; guests issue it on every open, so
// ErrNotSupported here would only produce noise.)
func (f *FixedLine) Purge(context.Context, rfc2217.PurgeTarget) error { return nil }

func (f *FixedLine) ModemState(context.Context) (rfc2217.ModemState, error) {
	return 0, notSupported(f.kind, f.addr, "modem state")
}
