package rfc2217

import (
	"errors"
	"testing"
)

func TestParseSettings(t *testing.T) {
	n81 := func(baud uint32) Settings {
		return Settings{Baud: baud, DataSize: 8, Parity: ParityNone, StopSize: Stop1, Flow: FlowNone}
	}
	good := []struct {
		in   string
		want Settings
		str  string
	}{
		{"115200 8N1", n81(115200), "115200 8N1"},
		{"9600 7E2", Settings{Baud: 9600, DataSize: 7, Parity: ParityEven, StopSize: Stop2, Flow: FlowNone}, "9600 7E2"},
		{"57600 8N1.5", Settings{Baud: 57600, DataSize: 8, Parity: ParityNone, StopSize: Stop15, Flow: FlowNone}, "57600 8N1.5"},
		{"300 5o1", Settings{Baud: 300, DataSize: 5, Parity: ParityOdd, StopSize: Stop1, Flow: FlowNone}, "300 5O1"},
		{"  19200   6M1 ", Settings{Baud: 19200, DataSize: 6, Parity: ParityMark, StopSize: Stop1, Flow: FlowNone}, "19200 6M1"},
		{"50 8S2", Settings{Baud: 50, DataSize: 8, Parity: ParitySpace, StopSize: Stop2, Flow: FlowNone}, "50 8S2"},
		{"921600 8N1 rtscts", Settings{Baud: 921600, DataSize: 8, Parity: ParityNone, StopSize: Stop1, Flow: FlowHardware}, "921600 8N1 rts/cts"},
		{"9600 8N1 XONXOFF", Settings{Baud: 9600, DataSize: 8, Parity: ParityNone, StopSize: Stop1, Flow: FlowXONXOFF}, "9600 8N1 xon/xoff"},
		{"9600 8N1 none", n81(9600), "9600 8N1"},
		{"9600 8N1 rts/cts", Settings{Baud: 9600, DataSize: 8, Parity: ParityNone, StopSize: Stop1, Flow: FlowHardware}, "9600 8N1 rts/cts"},
		{"9600 8N1 software", Settings{Baud: 9600, DataSize: 8, Parity: ParityNone, StopSize: Stop1, Flow: FlowXONXOFF}, "9600 8N1 xon/xoff"},
		// The whole range of SET-BAUDRATE: the config used to stop at
		// 50..20,000,000 and device URIs at 1..2³²-1; one grammar takes
		// the union (a 45-baud teletype, a 25 Mbaud adapter).
		{"45 5N2", Settings{Baud: 45, DataSize: 5, Parity: ParityNone, StopSize: Stop2, Flow: FlowNone}, "45 5N2"},
		{"1 8N1", n81(1), "1 8N1"},
		{"25000000 8N1", n81(25_000_000), "25000000 8N1"},
		{"4294967295 8N1", n81(4294967295), "4294967295 8N1"},
		{"+9600 8N1", n81(9600), "9600 8N1"}, // strconv.Atoi took it, so a config may have it
		{"009600 8N1", n81(9600), "9600 8N1"},
	}
	for _, tt := range good {
		got, err := ParseSettings(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSettings(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		if got.String() != tt.str {
			t.Errorf("ParseSettings(%q).String() = %q, want %q", tt.in, got.String(), tt.str)
		}
		if back, err := ParseSettings(got.String()); err != nil || back != got {
			t.Errorf("ParseSettings(%q) does not round-trip: %+v, %v", got.String(), back, err)
		}
	}
	bad := []struct{ in, msg string }{
		{"", `rfc2217: invalid line settings "": want "<baud> <databits><parity><stopbits>" such as "115200 8N1"`},
		{"115200", ``},
		{"8N1", ``},
		{"115200 8N", `rfc2217: invalid line settings "115200 8N": frame "8N": want <databits><parity><stopbits> such as 8N1`},
		{"115200 9N1", `rfc2217: invalid line settings "115200 9N1": data bits "9": want 5, 6, 7 or 8`},
		{"115200 4N1", ``},
		{"115200 8X1", `rfc2217: invalid line settings "115200 8X1": parity "X": want N, O, E, M or S`},
		{"115200 8N3", `rfc2217: invalid line settings "115200 8N3": stop bits "3": want 1, 1.5 or 2`},
		{"115200 8N1.25", ``},
		{"115200 8N2.0", ``},
		{"fast 8N1", `rfc2217: invalid line settings "fast 8N1": baud rate "fast": want an integer from 1 to 4294967295`},
		{"-9600 8N1", ``},
		{"++9600 8N1", ``},
		{"+ 8N1", ``},
		{"0 8N1", ``},
		{"4294967296 8N1", ``},
		{"115200 8N1 hw", `rfc2217: invalid line settings "115200 8N1 hw": flow control "hw": want none, xonxoff or rtscts (also software, hardware, xon/xoff, rts/cts)`},
		{"115200 8N1 rtscts extra", ``},
		{"115200,8N1", ``},
		{"115200 8 N 1", ``},
		{"1e5 8N1", ``},
		{"? ???", ``}, // String of unset settings is not a setting
	}
	for _, tt := range bad {
		got, err := ParseSettings(tt.in)
		if err == nil {
			t.Errorf("ParseSettings(%q) = %v, want an error", tt.in, got)
			continue
		}
		var se *SettingError
		if !errors.As(err, &se) || se.What != "line settings" || se.Value != tt.in {
			t.Errorf("ParseSettings(%q): error %#v is not a *SettingError for the input", tt.in, err)
		}
		if tt.msg != "" && err.Error() != tt.msg {
			t.Errorf("ParseSettings(%q):\n got %s\nwant %s", tt.in, err, tt.msg)
		}
	}
}

// TestParseSettingFields: the field grammars that device URI queries use,
// with the same aliases as ParseSettings.
func TestParseSettingFields(t *testing.T) {
	for in, want := range map[string]Parity{"none": ParityNone, "N": ParityNone, "odd": ParityOdd, "o": ParityOdd, "EVEN": ParityEven, "Mark": ParityMark, "s": ParitySpace, "space": ParitySpace} {
		if got, err := ParseParity(in); err != nil || got != want {
			t.Errorf("ParseParity(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]FlowControl{"none": FlowNone, "NONE": FlowNone, "xonxoff": FlowXONXOFF, "software": FlowXONXOFF, "xon/xoff": FlowXONXOFF, "RTSCTS": FlowHardware, "hardware": FlowHardware, "rts/cts": FlowHardware} {
		if got, err := ParseFlow(in); err != nil || got != want {
			t.Errorf("ParseFlow(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	// FlowControl.String's output parses back.
	for f := FlowNone; f <= FlowHardware; f++ {
		if got, err := ParseFlow(f.String()); err != nil || got != f {
			t.Errorf("ParseFlow(%q) = %v, %v", f.String(), got, err)
		}
	}
	for in, want := range map[string]StopSize{"1": Stop1, "1.5": Stop15, "2": Stop2} {
		if got, err := ParseStopSize(in); err != nil || got != want {
			t.Errorf("ParseStopSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]uint8{"5": 5, "8": 8} {
		if got, err := ParseDataSize(in); err != nil || got != want {
			t.Errorf("ParseDataSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]uint32{"1": 1, "115200": 115200, "+300": 300, "4294967295": 4294967295} {
		if got, err := ParseBaud(in); err != nil || got != want {
			t.Errorf("ParseBaud(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := []struct {
		what string
		err  error
	}{
		{"parity", second(ParseParity("x"))}, {"parity", second(ParseParity("nn"))}, {"parity", second(ParseParity(""))},
		{"flow control", second(ParseFlow("dtr"))}, {"flow control", second(ParseFlow(""))},
		{"stop bits", second(ParseStopSize("3"))}, {"stop bits", second(ParseStopSize("1.0"))},
		{"data bits", second(ParseDataSize("9"))}, {"data bits", second(ParseDataSize("08"))},
		{"baud rate", second(ParseBaud("0"))}, {"baud rate", second(ParseBaud("-1"))}, {"baud rate", second(ParseBaud("4294967296"))}, {"baud rate", second(ParseBaud(""))},
	}
	for _, tt := range bad {
		var se *SettingError
		if !errors.As(tt.err, &se) || se.What != tt.what {
			t.Errorf("%s: error %v is not a *SettingError for %s", tt.what, tt.err, tt.what)
		}
	}
	if got := (&SettingError{What: "parity", Value: "x", Want: wantParity}).Error(); got != `rfc2217: invalid parity "x": want none, odd, even, mark or space (or N, O, E, M, S)` {
		t.Errorf("SettingError = %q", got)
	}
}

func second[T any](_ T, err error) error { return err }

// FuzzParseSettings: accepted settings are complete and valid, and their
// String parses back to the same value; errors are *SettingError.
func FuzzParseSettings(f *testing.F) {
	for _, s := range []string{"115200 8N1", "9600 7E2", "57600 8N1.5", "300 5o1 rtscts", "9600 8N1 rts/cts", "+1 8S2", "4294967296 8N1", "9600 8N1.5 hardware"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseSettings(s)
		if err != nil {
			var se *SettingError
			if !errors.As(err, &se) || se.Value != s {
				t.Fatalf("error %T is not a *SettingError for the input: %v", err, err)
			}
			return
		}
		if st.Baud == 0 || st.DataSize < 5 || st.DataSize > 8 || st.Parity < ParityNone || st.Parity > ParitySpace ||
			st.StopSize < Stop1 || st.StopSize > Stop15 || st.Flow < FlowNone || st.Flow > FlowHardware {
			t.Fatalf("%q -> %+v: not a complete, valid setting", s, st)
		}
		back, err := ParseSettings(st.String())
		if err != nil || back != st {
			t.Fatalf("%q -> %q -> %+v, %v", s, st.String(), back, err)
		}
	})
}
