package rfc2217

import (
	"context"
	"errors"
	"strconv"
)

// ErrNotSupported is returned by Port methods for what the port cannot do
// or cannot know (modem lines on a pty, DTR on a raw TCP port, a peer that
// refused COM-PORT-OPTION).
var ErrNotSupported = errors.New("rfc2217: not supported by this port")

// Settings are the line settings of a serial port. A zero field means
// "unset": in a request, leave it as it is; in a result, unknown.
type Settings struct {
	Baud     uint32
	DataSize uint8 // 5–8
	Parity   Parity
	StopSize StopSize
	Flow     FlowControl
}

// String formats s as "115200 8N1", with "?" for unset fields and the
// flow control appended unless it is none or unset ("9600 7E2 rts/cts").
func (s Settings) String() string {
	var b []byte
	if s.Baud != 0 {
		b = strconv.AppendUint(b, uint64(s.Baud), 10)
	} else {
		b = append(b, '?')
	}
	b = append(b, ' ')
	if s.DataSize != 0 {
		b = strconv.AppendUint(b, uint64(s.DataSize), 10)
	} else {
		b = append(b, '?')
	}
	b = append(b, s.Parity.Letter()...)
	switch s.StopSize {
	case Stop1, Stop2, Stop15:
		b = append(b, s.StopSize.String()...)
	default:
		b = append(b, '?')
	}
	if s.Flow != FlowUnset && s.Flow != FlowNone {
		b = append(b, ' ')
		b = append(b, s.Flow.String()...)
	}
	return string(b)
}

// Merge returns s with each unset field taken from base.
func (s Settings) Merge(base Settings) Settings {
	if s.Baud == 0 {
		s.Baud = base.Baud
	}
	if s.DataSize == 0 {
		s.DataSize = base.DataSize
	}
	if s.Parity == 0 {
		s.Parity = base.Parity
	}
	if s.StopSize == 0 {
		s.StopSize = base.StopSize
	}
	if s.Flow == 0 {
		s.Flow = base.Flow
	}
	return s
}

// Port is the line control an access server drives and every device
// offers. Methods may block for a bounded time, never forever.
type Port interface {
	// SetSettings applies the set fields of s, leaves zero fields as they
	// are, and returns the settings now in effect (zero where unknown).
	SetSettings(ctx context.Context, s Settings) (Settings, error)
	SetDTR(ctx context.Context, on bool) error
	SetRTS(ctx context.Context, on bool) error
	SetBreak(ctx context.Context, on bool) error
	Purge(ctx context.Context, what PurgeTarget) error
	// ModemState returns the modem lines; ErrNotSupported where unknown.
	ModemState(ctx context.Context) (ModemState, error)
}
