package rfc2217

import (
	"fmt"
	"strconv"
	"strings"
)

// The text forms of Settings. There is one grammar for each field, used by
// the config's settings and flow keys and by device URI queries
// (?baud=…&parity=…): a value accepted in one place is accepted in all.

// ParseSettings parses line settings written the way Settings.String
// writes complete ones: "<baud> <databits><parity><stopbits> [flow]", for
// example "115200 8N1", "9600 7E2", "57600 8N1.5" or "19200 8N1 rtscts".
// Baud is as for ParseBaud; data bits 5 to 8; parity a letter N, O, E, M
// or S (any case); stop bits 1, 1.5 or 2; flow as for ParseFlow. Every
// field of the result is set: without a flow word, Flow is FlowNone.
func ParseSettings(s string) (Settings, error) {
	bad := func(format string, args ...any) (Settings, error) {
		return Settings{}, &SettingError{What: "line settings", Value: s, Want: fmt.Sprintf(format, args...)}
	}
	f := strings.Fields(s)
	if len(f) < 2 || len(f) > 3 {
		return bad(`want "<baud> <databits><parity><stopbits>" such as "115200 8N1"`)
	}
	var st Settings
	var ok bool
	if st.Baud, ok = parseBaud(f[0]); !ok {
		return bad("baud rate %q: %s", f[0], wantBaud)
	}
	frame := f[1]
	if len(frame) < 3 {
		return bad("frame %q: want <databits><parity><stopbits> such as 8N1", frame)
	}
	if st.DataSize, ok = parseDataSize(frame[:1]); !ok {
		return bad("data bits %q: %s", frame[:1], wantDataSize)
	}
	if st.Parity, ok = parityLetter(frame[1]); !ok {
		return bad("parity %q: want N, O, E, M or S", frame[1:2])
	}
	if st.StopSize, ok = parseStopSize(frame[2:]); !ok {
		return bad("stop bits %q: %s", frame[2:], wantStopSize)
	}
	st.Flow = FlowNone
	if len(f) == 3 {
		if st.Flow, ok = parseFlow(f[2]); !ok {
			return bad("flow control %q: %s", f[2], wantFlow)
		}
	}
	return st, nil
}

// What each field parser accepts, for error messages.
const (
	wantBaud     = "want an integer from 1 to 4294967295"
	wantDataSize = "want 5, 6, 7 or 8"
	wantParity   = "want none, odd, even, mark or space (or N, O, E, M, S)"
	wantStopSize = "want 1, 1.5 or 2"
	wantFlow     = "want none, xonxoff or rtscts (also software, hardware, xon/xoff, rts/cts)"
)

// SettingError is the error of the parsers of settings text: which
// setting, the text given, and what is wrong with it or would have been
// accepted.
type SettingError struct {
	What  string // "line settings", "baud rate", "data bits", "parity", "stop bits" or "flow control"
	Value string // the text as given
	Want  string // e.g. "want 5, 6, 7 or 8"
}

func (e *SettingError) Error() string {
	return "rfc2217: invalid " + e.What + " " + strconv.Quote(e.Value) + ": " + e.Want
}

// ParseBaud parses a baud rate: a decimal integer from 1 to 4294967295
// (the range of SET-BAUDRATE; 0 is its query), optionally with a leading
// "+". The device reports the rate it really took.
func ParseBaud(s string) (uint32, error) {
	b, ok := parseBaud(s)
	if !ok {
		return 0, &SettingError{What: "baud rate", Value: s, Want: wantBaud}
	}
	return b, nil
}

// ParseDataSize parses data bits: "5", "6", "7" or "8".
func ParseDataSize(s string) (uint8, error) {
	n, ok := parseDataSize(s)
	if !ok {
		return 0, &SettingError{What: "data bits", Value: s, Want: wantDataSize}
	}
	return n, nil
}

// ParseParity parses a parity name (none, odd, even, mark, space) or its
// letter (N, O, E, M, S), in any case.
func ParseParity(s string) (Parity, error) {
	if len(s) == 1 {
		if p, ok := parityLetter(s[0]); ok {
			return p, nil
		}
	}
	for p := ParityNone; p <= ParitySpace; p++ {
		if strings.EqualFold(s, p.String()) {
			return p, nil
		}
	}
	return 0, &SettingError{What: "parity", Value: s, Want: wantParity}
}

// ParseStopSize parses stop bits: "1", "1.5" or "2".
func ParseStopSize(s string) (StopSize, error) {
	v, ok := parseStopSize(s)
	if !ok {
		return 0, &SettingError{What: "stop bits", Value: s, Want: wantStopSize}
	}
	return v, nil
}

// ParseFlow parses flow control, in any case: none; xonxoff (also
// software, xon/xoff); rtscts (also hardware, rts/cts). FlowControl.String
// writes the forms with a slash, so its output parses.
func ParseFlow(s string) (FlowControl, error) {
	f, ok := parseFlow(s)
	if !ok {
		return 0, &SettingError{What: "flow control", Value: s, Want: wantFlow}
	}
	return f, nil
}

func parseBaud(s string) (uint32, bool) {
	s = strings.TrimPrefix(s, "+") // strconv.Atoi took it, and configs used Atoi
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	b, err := strconv.ParseUint(s, 10, 32)
	return uint32(b), err == nil && b != 0
}

func parseDataSize(s string) (uint8, bool) {
	if len(s) == 1 && s[0] >= '5' && s[0] <= '8' {
		return s[0] - '0', true
	}
	return 0, false
}

func parityLetter(c byte) (Parity, bool) {
	if i := strings.IndexByte("NOEMSnoems", c); i >= 0 {
		return ParityNone + Parity(i%5), true
	}
	return 0, false
}

func parseStopSize(s string) (StopSize, bool) {
	switch s {
	case "1":
		return Stop1, true
	case "1.5":
		return Stop15, true
	case "2":
		return Stop2, true
	}
	return 0, false
}

func parseFlow(s string) (FlowControl, bool) {
	switch strings.ToLower(s) {
	case "none":
		return FlowNone, true
	case "xonxoff", "software", "xon/xoff":
		return FlowXONXOFF, true
	case "rtscts", "hardware", "rts/cts":
		return FlowHardware, true
	}
	return 0, false
}
