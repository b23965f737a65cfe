// Package rfc2217test has test helpers for code that speaks RFC 2217: an
// in-memory Port that records what it is asked, and a small telnet access
// server (ServeConn) built on rfc2217.AccessServer, to stand in for ser2net
// or an NPort without starting a process.
package rfc2217test

import (
	"context"
	"fmt"
	"sync"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// MemPort is an in-memory rfc2217.Port. It applies every request to its
// fields, records the calls, and reports ModemState with CTS following RTS
// and DSR following DTR (like pyserial's loop:// port) unless NoModem is
// set. All methods are safe for concurrent use.
type MemPort struct {
	mu       sync.Mutex
	settings rfc2217.Settings
	dtr, rts bool
	brk      bool
	cd       bool
	calls    []string

	// NoModem makes SetDTR, SetRTS and ModemState fail with
	// rfc2217.ErrNotSupported, like a pty. Set it before use.
	NoModem bool
	// Fixed, if its fields are set, pins those settings: requests are
	// recorded but the port reports the fixed value (an NPort whose
	// settings only its console can change). Set it before use.
	Fixed rfc2217.Settings
}

// NewMemPort returns a port at s with DTR, RTS and CD on.
func NewMemPort(s rfc2217.Settings) *MemPort {
	return &MemPort{settings: s, dtr: true, rts: true, cd: true}
}

func (p *MemPort) record(format string, args ...any) {
	p.calls = append(p.calls, fmt.Sprintf(format, args...))
}

// Calls returns the calls made so far, e.g. "SetSettings 57600 ???",
// "SetDTR false", and forgets them.
func (p *MemPort) Calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.calls
	p.calls = nil
	return c
}

// Current returns the settings in effect.
func (p *MemPort) Current() rfc2217.Settings {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.settings
}

// Lines returns DTR, RTS and BREAK as last set.
func (p *MemPort) Lines() (dtr, rts, brk bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dtr, p.rts, p.brk
}

// SetCD sets the carrier-detect line the port reports.
func (p *MemPort) SetCD(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cd = on
}

func (p *MemPort) SetSettings(ctx context.Context, s rfc2217.Settings) (rfc2217.Settings, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s != (rfc2217.Settings{}) {
		p.record("SetSettings %v", s)
	}
	p.settings = p.Fixed.Merge(s.Merge(p.settings))
	return p.settings, nil
}

func (p *MemPort) SetDTR(ctx context.Context, on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("SetDTR %v", on)
	if p.NoModem {
		return rfc2217.ErrNotSupported
	}
	p.dtr = on
	return nil
}

func (p *MemPort) SetRTS(ctx context.Context, on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("SetRTS %v", on)
	if p.NoModem {
		return rfc2217.ErrNotSupported
	}
	p.rts = on
	return nil
}

func (p *MemPort) SetBreak(ctx context.Context, on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("SetBreak %v", on)
	p.brk = on
	return nil
}

func (p *MemPort) Purge(ctx context.Context, what rfc2217.PurgeTarget) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Purge %v", what)
	return nil
}

func (p *MemPort) ModemState(ctx context.Context) (rfc2217.ModemState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.NoModem {
		return 0, rfc2217.ErrNotSupported
	}
	var m rfc2217.ModemState
	if p.cd {
		m |= rfc2217.ModemCD
	}
	if p.dtr {
		m |= rfc2217.ModemDSR
	}
	if p.rts {
		m |= rfc2217.ModemCTS
	}
	return m, nil
}

var _ rfc2217.Port = (*MemPort)(nil)
