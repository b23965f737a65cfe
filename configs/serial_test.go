package configs

import "testing"

func TestParseLineSettings(t *testing.T) {
	good := []struct {
		in   string
		want LineSettings
		str  string
	}{
		{"115200 8N1", LineSettings{Baud: 115200, DataBits: 8}, "115200 8N1"},
		{"9600 7E2", LineSettings{Baud: 9600, DataBits: 7, Parity: ParityEven, StopBits: StopBits2}, "9600 7E2"},
		{"57600 8N1.5", LineSettings{Baud: 57600, DataBits: 8, StopBits: StopBits1Half}, "57600 8N1.5"},
		{"300 5o1", LineSettings{Baud: 300, DataBits: 5, Parity: ParityOdd}, "300 5O1"},
		{"  19200   6M1 ", LineSettings{Baud: 19200, DataBits: 6, Parity: ParityMark}, "19200 6M1"},
		{"50 8S2", LineSettings{Baud: 50, DataBits: 8, Parity: ParitySpace, StopBits: StopBits2}, "50 8S2"},
		{"921600 8N1 rtscts", LineSettings{Baud: 921600, DataBits: 8, Flow: FlowRTSCTS}, "921600 8N1 rtscts"},
		{"9600 8N1 XONXOFF", LineSettings{Baud: 9600, DataBits: 8, Flow: FlowXONXOFF}, "9600 8N1 xonxoff"},
		{"9600 8N1 none", LineSettings{Baud: 9600, DataBits: 8}, "9600 8N1"},
	}
	for _, tt := range good {
		got, err := ParseLineSettings(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseLineSettings(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		if got.String() != tt.str {
			t.Errorf("ParseLineSettings(%q).String() = %q, want %q", tt.in, got.String(), tt.str)
		}
	}
	bad := []string{
		"", "115200", "8N1", "115200 8N", "115200 9N1", "115200 4N1", "115200 8X1", "115200 8N3",
		"115200 8N1.25", "115200 8N2.0", "fast 8N1", "-9600 8N1", "0 8N1", "49 8N1", "20000001 8N1",
		"115200 8N1 hw", "115200 8N1 rtscts extra", "115200,8N1", "115200 8 N 1", "1e5 8N1",
	}
	for _, in := range bad {
		if got, err := ParseLineSettings(in); err == nil {
			t.Errorf("ParseLineSettings(%q) = %v, want error", in, got)
		}
	}
	if d := DefaultLineSettings().String(); d != "9600 8N1" {
		t.Errorf("DefaultLineSettings = %q", d)
	}
}

func TestEnumStrings(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{ParityNone.String(), "N"}, {ParitySpace.String(), "S"}, {Parity(9).String(), "Parity(9)"},
		{StopBits1Half.String(), "1.5"}, {StopBits(7).String(), "StopBits(7)"},
		{FlowRTSCTS.String(), "rtscts"}, {Flow(5).String(), "Flow(5)"},
		{TargetRFC2217.String(), "rfc2217"}, {TargetKind(0).String(), "TargetKind(0)"},
	} {
		if tt.got != tt.want {
			t.Errorf("String() = %q, want %q", tt.got, tt.want)
		}
	}
}
