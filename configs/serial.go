package configs

import (
	"fmt"
	"strconv"
	"strings"
)

// Parity is a serial line's parity setting. The zero value is ParityNone.
type Parity uint8

// Parity settings, written in a settings string as the letter after the
// data bits ("8N1").
const (
	ParityNone  Parity = iota // N
	ParityEven                // E
	ParityOdd                 // O
	ParityMark                // M
	ParitySpace               // S
)

const parityLetters = "NEOMS"

// String returns the parity letter used in settings strings: N, E, O, M or S.
func (p Parity) String() string {
	if int(p) < len(parityLetters) {
		return parityLetters[p : p+1]
	}
	return "Parity(" + strconv.Itoa(int(p)) + ")"
}

// parseParity accepts a parity letter or its name (none, even, odd, mark,
// space), in any case.
func parseParity(s string) (Parity, bool) {
	switch strings.ToLower(s) {
	case "n", "none":
		return ParityNone, true
	case "e", "even":
		return ParityEven, true
	case "o", "odd":
		return ParityOdd, true
	case "m", "mark":
		return ParityMark, true
	case "s", "space":
		return ParitySpace, true
	}
	return 0, false
}

// StopBits is a serial line's number of stop bits. The zero value is
// StopBits1.
type StopBits uint8

// Stop bit settings, written in a settings string after the parity letter.
const (
	StopBits1     StopBits = iota // "1"
	StopBits1Half                 // "1.5"
	StopBits2                     // "2"
)

// String returns "1", "1.5" or "2".
func (s StopBits) String() string {
	switch s {
	case StopBits1:
		return "1"
	case StopBits1Half:
		return "1.5"
	case StopBits2:
		return "2"
	}
	return "StopBits(" + strconv.Itoa(int(s)) + ")"
}

func parseStopBits(s string) (StopBits, bool) {
	switch s {
	case "1":
		return StopBits1, true
	case "1.5":
		return StopBits1Half, true
	case "2":
		return StopBits2, true
	}
	return 0, false
}

// Flow is a serial line's flow control. The zero value is FlowNone.
type Flow uint8

// Flow control settings, as written in a route's flow key.
const (
	FlowNone    Flow = iota // "none"
	FlowXONXOFF             // "xonxoff": software flow control
	FlowRTSCTS              // "rtscts": hardware flow control
)

// String returns "none", "xonxoff" or "rtscts".
func (f Flow) String() string {
	switch f {
	case FlowNone:
		return "none"
	case FlowXONXOFF:
		return "xonxoff"
	case FlowRTSCTS:
		return "rtscts"
	}
	return "Flow(" + strconv.Itoa(int(f)) + ")"
}

// ParseFlow parses "none", "xonxoff" or "rtscts" (any case).
func ParseFlow(s string) (Flow, error) {
	switch strings.ToLower(s) {
	case "none":
		return FlowNone, nil
	case "xonxoff":
		return FlowXONXOFF, nil
	case "rtscts":
		return FlowRTSCTS, nil
	}
	return 0, fmt.Errorf("invalid flow control %q: want none, xonxoff or rtscts", s)
}

// Limits on LineSettings values.
const (
	MinBaud = 50
	MaxBaud = 20_000_000
)

// LineSettings are the settings of a serial line. The zero value is not
// valid (Baud and DataBits are 0); DefaultLineSettings is "9600 8N1".
type LineSettings struct {
	Baud     int // bits per second, MinBaud..MaxBaud
	DataBits int // 5..8
	Parity   Parity
	StopBits StopBits
	Flow     Flow
}

// DefaultLineSettings returns the settings a route gets when it sets none:
// 9600 baud, 8 data bits, no parity, 1 stop bit, no flow control.
func DefaultLineSettings() LineSettings {
	return LineSettings{Baud: 9600, DataBits: 8}
}

// String returns the settings in the form ParseLineSettings reads:
// "115200 8N1", with the flow control appended unless it is none
// ("115200 8N1 rtscts").
func (l LineSettings) String() string {
	s := strconv.Itoa(l.Baud) + " " + strconv.Itoa(l.DataBits) + l.Parity.String() + l.StopBits.String()
	if l.Flow != FlowNone {
		s += " " + l.Flow.String()
	}
	return s
}

// ParseLineSettings parses "<baud> <databits><parity><stopbits> [flow]":
// baud a decimal integer (MinBaud..MaxBaud); data bits 5..8; parity one of
// N, E, O, M, S (any case); stop bits 1, 1.5 or 2; optional flow control
// none, xonxoff or rtscts. Examples: "115200 8N1", "9600 7E2",
// "57600 8N1.5", "19200 8N1 rtscts".
func ParseLineSettings(s string) (LineSettings, error) {
	bad := func(why string) (LineSettings, error) {
		return LineSettings{}, fmt.Errorf("invalid line settings %q: %s", s, why)
	}
	f := strings.Fields(s)
	if len(f) < 2 || len(f) > 3 {
		return bad(`want "<baud> <databits><parity><stopbits>" such as "115200 8N1"`)
	}
	var l LineSettings
	baud, err := strconv.Atoi(f[0])
	if err != nil || baud < MinBaud || baud > MaxBaud {
		return bad(fmt.Sprintf("baud rate %q is not an integer between %d and %d", f[0], MinBaud, MaxBaud))
	}
	l.Baud = baud
	frame := f[1]
	if len(frame) < 3 {
		return bad(fmt.Sprintf("frame %q: want <databits><parity><stopbits> such as 8N1", frame))
	}
	if frame[0] < '5' || frame[0] > '8' {
		return bad(fmt.Sprintf("data bits %q: want 5, 6, 7 or 8", frame[:1]))
	}
	l.DataBits = int(frame[0] - '0')
	p, ok := parseParity(frame[1:2])
	if !ok {
		return bad(fmt.Sprintf("parity %q: want N, E, O, M or S", frame[1:2]))
	}
	l.Parity = p
	sb, ok := parseStopBits(frame[2:])
	if !ok {
		return bad(fmt.Sprintf("stop bits %q: want 1, 1.5 or 2", frame[2:]))
	}
	l.StopBits = sb
	if len(f) == 3 {
		fl, err := ParseFlow(f[2])
		if err != nil {
			return bad(fmt.Sprintf("flow control %q: want none, xonxoff or rtscts", f[2]))
		}
		l.Flow = fl
	}
	return l, nil
}
