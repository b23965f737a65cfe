package target

import (
	"errors"
	"strings"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

func TestParse(t *testing.T) {
	s115200 := rfc2217.Settings{Baud: 115200, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone}
	good := []struct {
		uri  string
		want Target
	}{
		{"tcp://10.0.0.5:4001", Target{Kind: KindTCP, Host: "10.0.0.5", Port: 4001}},
		{"TCP://moxa-1.lab:4002", Target{Kind: KindTCP, Host: "moxa-1.lab", Port: 4002}},
		{"tcp://[::1]:7000", Target{Kind: KindTCP, Host: "::1", Port: 7000}},
		{"tcp://host.example.:23", Target{Kind: KindTCP, Host: "host.example.", Port: 23}},
		{"tcp://under_score:23", Target{Kind: KindTCP, Host: "under_score", Port: 23}},
		{"nport://192.168.127.254", Target{Kind: KindNPort, Host: "192.168.127.254", Port: 4001, CmdPort: 966}},
		{"nport://192.168.127.254:4004", Target{Kind: KindNPort, Host: "192.168.127.254", Port: 4004, CmdPort: 969}},
		{"nport://np1:4032", Target{Kind: KindNPort, Host: "np1", Port: 4032, CmdPort: 997}},
		{"nport://np1?baud=115200&databits=8&parity=none&stopbits=1&flow=none", Target{Kind: KindNPort, Host: "np1", Port: 4001, CmdPort: 966, Settings: s115200}},
		{"nport://np1?cmd=none", Target{Kind: KindNPort, Host: "np1", Port: 4001}},
		{"nport://np1:4001?CMD=None&baud=9600", Target{Kind: KindNPort, Host: "np1", Port: 4001, Settings: rfc2217.Settings{Baud: 9600}}},
		{"nport://np1:4002?cmd=966", Target{Kind: KindNPort, Host: "np1", Port: 4002, CmdPort: 966}},
		{"nport://np1:950?cmd=966", Target{Kind: KindNPort, Host: "np1", Port: 950, CmdPort: 966}}, // Real COM mode's ports
		{"nport://np1:5000?cmd=none", Target{Kind: KindNPort, Host: "np1", Port: 5000}},
		{"nport://[fd00::5]:4003?cmd=0968", Target{Kind: KindNPort, Host: "fd00::5", Port: 4003, CmdPort: 968}},
		{"telnet://linuxbox", Target{Kind: KindTelnet, Host: "linuxbox", Port: 23}},
		{"telnet://linuxbox:2323", Target{Kind: KindTelnet, Host: "linuxbox", Port: 2323}},
		{"telnet://[::1]:23", Target{Kind: KindTelnet, Host: "::1", Port: 23}},
		{"rfc2217://ts1:7001", Target{Kind: KindRFC2217, Host: "ts1", Port: 7001}},
		{"rfc2217://ts1:7001/", Target{Kind: KindRFC2217, Host: "ts1", Port: 7001}}, // a bare trailing slash
		{"rfc2217://ts1:07001", Target{Kind: KindRFC2217, Host: "ts1", Port: 7001}},
		{"tcp://10.0.0.5:4001/?baud=9600", Target{Kind: KindTCP, Host: "10.0.0.5", Port: 4001, Settings: rfc2217.Settings{Baud: 9600}}},
		{"tcp://10.0.0.5:4001?", Target{Kind: KindTCP, Host: "10.0.0.5", Port: 4001}},
		{"rfc2217://ts1:7001?baud=57600&stopbits=2", Target{Kind: KindRFC2217, Host: "ts1", Port: 7001, Settings: rfc2217.Settings{Baud: 57600, StopSize: rfc2217.Stop2}}},
		{"serial:///dev/ttyUSB0?baud=115200&parity=none&databits=8&stopbits=1&flow=none", Target{Kind: KindSerial, Path: "/dev/ttyUSB0", Settings: s115200}},
		{"serial:///dev/ttyS1?parity=E&databits=7&stopbits=1.5&flow=RTSCTS", Target{Kind: KindSerial, Path: "/dev/ttyS1", Settings: rfc2217.Settings{DataSize: 7, Parity: rfc2217.ParityEven, StopSize: rfc2217.Stop15, Flow: rfc2217.FlowHardware}}},
		{"serial:///dev/serial/by-id/usb-FTDI%20X-if00?flow=xonxoff", Target{Kind: KindSerial, Path: "/dev/serial/by-id/usb-FTDI X-if00", Settings: rfc2217.Settings{Flow: rfc2217.FlowXONXOFF}}},
		{"serial:///dev/ttyS0?parity=mark&baud=250000", Target{Kind: KindSerial, Path: "/dev/ttyS0", Settings: rfc2217.Settings{Baud: 250000, Parity: rfc2217.ParityMark}}},
		{"serial:///dev/ttyS0?BAUD=45&Flow=Hardware", Target{Kind: KindSerial, Path: "/dev/ttyS0", Settings: rfc2217.Settings{Baud: 45, Flow: rfc2217.FlowHardware}}},
		{"serial:///dev/ttyS0?flow=software", Target{Kind: KindSerial, Path: "/dev/ttyS0", Settings: rfc2217.Settings{Flow: rfc2217.FlowXONXOFF}}},
		{"/dev/ttyUSB0", Target{Kind: KindSerial, Path: "/dev/ttyUSB0"}},
		{"/dev/ttyS0?baud=9600", Target{Kind: KindSerial, Path: "/dev/ttyS0?baud=9600"}}, // a plain path is taken verbatim
	}
	for _, tc := range good {
		got, err := Parse(tc.uri)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.uri, err)
			continue
		}
		tc.want.Raw = tc.uri
		if got != tc.want {
			t.Errorf("Parse(%q)\n got %+v\nwant %+v", tc.uri, got, tc.want)
		}
		again, err := Parse(got.String())
		again.Raw = got.Raw
		if err != nil || again != got {
			t.Errorf("Parse(%q).String() = %q does not round-trip: %+v, %v", tc.uri, got.String(), again, err)
		}
	}

	bad := []struct{ uri, msg string }{
		{"foo://x", `target: unknown scheme "foo" in "foo://x" (want tcp, nport, telnet, rfc2217, serial or an absolute device path)`},
		{"ftp://host:21", `target: unknown scheme "ftp" in "ftp://host:21" (want tcp, nport, telnet, rfc2217, serial or an absolute device path)`},
		{"", `target: empty URI in "" (want tcp, nport, telnet, rfc2217, serial or an absolute device path)`},
		{"lab-router-3", `target: no scheme in "lab-router-3" (want scheme://… or an absolute /dev path)`},
		{"10.0.0.5:4001", `target: no scheme in "10.0.0.5:4001" (want scheme://… or an absolute /dev path)`},
		{"dev/ttyS0", `target: no scheme in "dev/ttyS0" (want scheme://… or an absolute /dev path)`},
		{"serial:dev/ttyS0", `target: no scheme in "serial:dev/ttyS0" (want scheme://… or an absolute /dev path)`},
		{"tcp://host", `target: missing port in "tcp://host" (want tcp://host:port)`},
		{"tcp://host:", `target: bad port "" in "tcp://host:" (want a port number 1–65535)`},
		{"nport://host:", `target: bad port "" in "nport://host:" (want a port number 1–65535)`},
		{"nport://host:4033", `target: data port 4033 has no default command port (only 4001–4032 do) in "nport://host:4033" (give ?cmd=PORT, the NPort's command port for this serial port, or ?cmd=none for data only)`},
		{"nport://host:950", `target: data port 950 has no default command port (only 4001–4032 do) in "nport://host:950" (give ?cmd=PORT, the NPort's command port for this serial port, or ?cmd=none for data only)`},
		{"nport://host?cmd=x", `target: bad command port "x" in "nport://host?cmd=x" (want cmd=PORT (1–65535) or cmd=none)`},
		{"nport://host?cmd=0", `target: bad command port "0" in "nport://host?cmd=0" (want cmd=PORT (1–65535) or cmd=none)`},
		{"nport://host?cmd=65536", `target: bad command port "65536" in "nport://host?cmd=65536" (want cmd=PORT (1–65535) or cmd=none)`},
		{"nport://host?cmd=", `target: empty cmd in "nport://host?cmd=" (want cmd=PORT or cmd=none)`},
		{"nport://host?cmd=966&cmd=967", `target: parameter "cmd" given twice in "nport://host?cmd=966&cmd=967"`},
		{"nport://host:966?cmd=966", `target: command port 966 is the data port in "nport://host:966?cmd=966" (the NPort's command port differs from its data port)`},
		{"tcp://host:4001?cmd=966", `target: parameter "cmd" on a tcp URI in "tcp://host:4001?cmd=966" (cmd is for nport://host[:data]?cmd=port|none)`},
		{"serial:///dev/ttyS0?cmd=none", `target: parameter "cmd" on a serial URI in "serial:///dev/ttyS0?cmd=none" (cmd is for nport://host[:data]?cmd=port|none)`},
		{"tcp://:4001", `target: missing host in "tcp://:4001" (want tcp://host:port)`},
		{"tcp://host:0", `target: bad port "0" in "tcp://host:0" (want a port number 1–65535)`},
		{"tcp://host:65536", `target: bad port "65536" in "tcp://host:65536" (want a port number 1–65535)`},
		{"tcp://host:+1", `target: bad port "+1" in "tcp://host:+1" (want a port number 1–65535)`},
		{"tcp://host:http", `target: bad port "http" in "tcp://host:http" (want a port number 1–65535)`},
		{"tcp://host:4001/x", `target: unexpected path "/x" in "tcp://host:4001/x" (want tcp://host:port)`},
		{"tcp://user@host:4001", `target: user info not allowed in "tcp://user@host:4001" (want tcp://host:port)`},
		{"tcp://::1:4001", `target: too many colons in "::1:4001" in "tcp://::1:4001" (write IPv6 addresses as [addr]:port)`},
		{"tcp://[10.0.0.1]:4001", `target: bad IPv6 address "10.0.0.1" in "tcp://[10.0.0.1]:4001" (want an IPv6 address inside [ ])`},
		{"tcp://[::ffff:10.0.0.1]:4001", `target: bad IPv6 address "::ffff:10.0.0.1" in "tcp://[::ffff:10.0.0.1]:4001" (want an IPv6 address inside [ ])`},
		{"tcp://[fe80::1%25eth0]:1", `target: bad IPv6 address "fe80::1%25eth0" in "tcp://[fe80::1%25eth0]:1" (want an IPv6 address inside [ ])`},
		{"tcp://[::1:4001", `target: missing ']' in host "[::1:4001" in "tcp://[::1:4001" (want tcp://host:port)`},
		{"tcp://[::1]x", `target: unexpected "x" after ']' in "tcp://[::1]x" (want tcp://host:port)`},
		{"tcp://ho st:1", `target: invalid host "ho st" in "tcp://ho st:1" (want tcp://host:port)`},
		{"tcp://ho$t:1", `target: invalid host "ho$t" in "tcp://ho$t:1" (want tcp://host:port)`},
		// DNS names are checked label by label (the device layer used to
		// check characters only; names like these never resolve).
		{"tcp://a..b:1", `target: invalid host "a..b" in "tcp://a..b:1" (want tcp://host:port)`},
		{"tcp://-a:1", `target: invalid host "-a" in "tcp://-a:1" (want tcp://host:port)`},
		{"tcp://a-.b:1", `target: invalid host "a-.b" in "tcp://a-.b:1" (want tcp://host:port)`},
		{"tcp://.:1", `target: invalid host "." in "tcp://.:1" (want tcp://host:port)`},
		{"tcp://" + strings.Repeat("a", 64) + ":1", ``},
		{"tcp://h:1#frag", `target: fragment not allowed in "tcp://h:1#frag"`},
		{"tcp://host:1?q", `target: unknown parameter "q" in "tcp://host:1?q" (want baud, parity, databits, stopbits, flow, or cmd on nport://)`},
		{"rfc2217://ts1", `target: missing port in "rfc2217://ts1" (want rfc2217://host:port)`},
		{"nport://", `target: missing host in "nport://" (want nport://host[:port], port defaults to 4001)`},
		{"telnet://", `target: missing host in "telnet://" (want telnet://host[:port], port defaults to 23)`},
		{"serial://dev/ttyUSB0", `target: host "dev" in serial URI in "serial://dev/ttyUSB0" (want serial:///dev/ttyUSB0, with three slashes)`},
		{"serial://host/dev/ttyS0", `target: host "host" in serial URI in "serial://host/dev/ttyS0" (want serial:///dev/ttyUSB0, with three slashes)`},
		{"/", `target: missing device path in "/" (want a device path such as /dev/ttyUSB0)`}, // fuzz crasher: canonical form did not parse
		{"serial:///", `target: missing device path in "serial:///" (want a device path such as /dev/ttyUSB0)`},
		{"/dev/", `target: device path "/dev/" names a directory in "/dev/" (want a device path such as /dev/ttyUSB0)`},
		{"serial:///dev/", `target: device path "/dev/" names a directory in "serial:///dev/" (want a device path such as /dev/ttyUSB0)`},
		{"/dev/x\x00", `target: NUL byte in device path in "/dev/x\x00"`},
		{"serial:///dev/%00", `target: NUL byte in device path in "serial:///dev/%00"`},
		{"serial:///dev/%zz", `target: bad escape in device path "/dev/%zz" in "serial:///dev/%zz"`},
		{"serial:///dev/ttyS0?baud=fast", `target: bad baud "fast" in "serial:///dev/ttyS0?baud=fast" (want an integer from 1 to 4294967295)`},
		{"serial:///dev/ttyS0?baud=0", `target: bad baud "0" in "serial:///dev/ttyS0?baud=0" (want an integer from 1 to 4294967295)`},
		{"serial:///dev/ttyS0?parity=x", `target: bad parity "x" in "serial:///dev/ttyS0?parity=x" (want none, odd, even, mark or space (or N, O, E, M, S))`},
		{"serial:///dev/ttyS0?databits=9", `target: bad databits "9" in "serial:///dev/ttyS0?databits=9" (want 5, 6, 7 or 8)`},
		{"serial:///dev/ttyS0?stopbits=3", `target: bad stopbits "3" in "serial:///dev/ttyS0?stopbits=3" (want 1, 1.5 or 2)`},
		{"serial:///dev/ttyS0?flow=dtr", `target: bad flow "dtr" in "serial:///dev/ttyS0?flow=dtr" (want none, xonxoff or rtscts (also software, hardware, xon/xoff, rts/cts))`},
		{"serial:///dev/ttyS0?speed=9600", `target: unknown parameter "speed" in "serial:///dev/ttyS0?speed=9600" (want baud, parity, databits, stopbits, flow, or cmd on nport://)`},
		{"serial:///dev/ttyS0?baud=9600&baud=19200", `target: parameter "baud" given twice in "serial:///dev/ttyS0?baud=9600&baud=19200"`},
		{"serial:///dev/ttyS0?baud=9600&BAUD=19200", `target: parameter "baud" given twice in "serial:///dev/ttyS0?baud=9600&BAUD=19200"`},
		{"serial:///dev/ttyS0?baud=%zz", `target: bad value "%zz" for baud in "serial:///dev/ttyS0?baud=%zz"`},
	}
	for _, tc := range bad {
		_, err := Parse(tc.uri)
		if err == nil {
			t.Errorf("Parse(%q): no error, want %s", tc.uri, tc.msg)
			continue
		}
		if tc.msg != "" && err.Error() != tc.msg {
			t.Errorf("Parse(%q):\n got %s\nwant %s", tc.uri, err, tc.msg)
		}
		var ue *URIError
		if !errors.As(err, &ue) || ue.URI != tc.uri {
			t.Errorf("Parse(%q): error %T is not a *URIError for the URI", tc.uri, err)
		}
	}
}

func TestCheckHost(t *testing.T) {
	for _, h := range []string{"localhost", "a.b-c.example", "x_y", "host.", "10.0.0.1", "::1", "fd00::5", strings.Repeat("a", 63) + ".b", "1.2.3"} {
		if err := CheckHost(h); err != nil {
			t.Errorf("CheckHost(%q): %v", h, err)
		}
	}
	for h, msg := range map[string]string{
		"":                               "missing host",
		"fe80::1%eth0":                   `host "fe80::1%eth0": zones are not allowed`,
		"a..b":                           `invalid host "a..b"`,
		".":                              `invalid host "."`,
		"-a":                             `invalid host "-a"`,
		"ho st":                          `invalid host "ho st"`,
		strings.Repeat("a", 64):          `invalid host "` + strings.Repeat("a", 64) + `"`,
		strings.Repeat("a.", 127) + "ab": `invalid host "` + strings.Repeat("a.", 127) + `ab"`,
	} {
		if err := CheckHost(h); err == nil || err.Error() != msg {
			t.Errorf("CheckHost(%q) = %v, want %s", h, err, msg)
		}
	}
}

// FuzzParse: never panics; errors are *URIError for the input; whatever
// parses is well formed (a known kind, a host CheckHost accepts or an IPv6
// address, a port in range, a device path that is not a directory, only
// valid settings) and has a canonical form that parses to the same Target
// and the same Key.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"tcp://10.0.0.5:4001", "nport://np1", "telnet://h", "rfc2217://[::1]:7001?baud=57600&stopbits=2",
		"serial:///dev/ttyUSB0?baud=115200&parity=none&databits=8&stopbits=1&flow=none", "/dev/ttyS0",
		"serial:///dev/a%20b", "foo://x", "tcp://h:1#x", "serial://x/y", "tcp://[::1", "tcp://h:+1",
		"tcp://h:1/", "TCP://H:1", "tcp://a..b:1", "/dev/", "telnet://h.:023?FLOW=rts/cts&parity=S",
		"nport://np1:4002?cmd=966", "nport://np1:5000?cmd=none", "nport://np1:950", "nport://h?cmd=966&baud=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		tg, err := Parse(uri)
		if err != nil {
			var ue *URIError
			if !errors.As(err, &ue) || ue.URI != uri || ue.Problem == "" {
				t.Fatalf("error %T is not a *URIError for the input: %v", err, err)
			}
			return
		}
		if tg.Raw != uri {
			t.Fatalf("Raw = %q, want %q", tg.Raw, uri)
		}
		switch {
		case tg.Kind == KindSerial:
			if tg.Path == "" || tg.Path[0] != '/' || strings.HasSuffix(tg.Path, "/") || tg.Host != "" || tg.Port != 0 {
				t.Fatalf("serial target %+v", tg)
			}
		case tg.Kind.Network():
			if tg.Port < 1 || tg.Port > 65535 || tg.Path != "" {
				t.Fatalf("network target %+v", tg)
			}
			if tg.Kind != KindNPort && tg.CmdPort != 0 || tg.CmdPort < 0 || tg.CmdPort > 65535 || tg.CmdPort == tg.Port {
				t.Fatalf("command port of %+v", tg)
			}
			if def, ok := NPortCmdPort(tg.Port); tg.Kind == KindNPort && !strings.Contains(strings.ToLower(uri), "cmd=") && (!ok || tg.CmdPort != def) {
				t.Fatalf("nport target without cmd= has command port %d, want the default of data port %d", tg.CmdPort, tg.Port)
			}
			if err := CheckHost(tg.Host); err != nil {
				t.Fatalf("network target %+v: %v", tg, err)
			}
		default:
			t.Fatalf("kind %v", tg.Kind)
		}
		s := tg.Settings
		if s.DataSize != 0 && (s.DataSize < 5 || s.DataSize > 8) || s.Parity > rfc2217.ParitySpace ||
			s.StopSize > rfc2217.Stop15 || s.Flow > rfc2217.FlowHardware {
			t.Fatalf("settings %+v out of range", s)
		}
		again, err := Parse(tg.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", tg.String(), uri, err)
		}
		again.Raw = tg.Raw
		if again != tg || again.Key() != tg.Key() {
			t.Fatalf("round trip of %q via %q: %+v != %+v", uri, tg.String(), again, tg)
		}
	})
}

func TestTargetKey(t *testing.T) {
	same := [][]string{
		{"tcp://Moxa1:4001", "nport://moxa1", "nport://MOXA1:4001?baud=9600", "tcp://moxa1:4001?baud=115200"},
		{"/dev/ttyUSB0", "serial:///dev/ttyUSB0", "serial:///dev/ttyUSB0?baud=9600"},
		{"rfc2217://ts:7001", "RFC2217://TS:7001?stopbits=2", "telnet://ts:7001", "tcp://ts:7001"},
		{"telnet://ts", "tcp://ts:23"},
	}
	seen := map[string]string{}
	for _, group := range same {
		key := mustParse(t, group[0]).Key()
		for _, uri := range group[1:] {
			if k := mustParse(t, uri).Key(); k != key {
				t.Errorf("Key(%q) = %q, want %q as for %q", uri, k, key, group[0])
			}
		}
		if other, dup := seen[key]; dup {
			t.Errorf("%q and %q share key %q", group[0], other, key)
		}
		seen[key] = group[0]
	}
}

func TestKinds(t *testing.T) {
	for k, want := range map[Kind][2]bool{
		KindTCP: {true, true}, KindNPort: {true, true}, KindTelnet: {true, true},
		KindRFC2217: {false, true}, KindSerial: {false, false}, 0: {false, false},
	} {
		if k.FixedLine() != want[0] || k.Network() != want[1] {
			t.Errorf("%v: FixedLine %v, Network %v; want %v", k, k.FixedLine(), k.Network(), want)
		}
	}
	for uri, want := range map[string]bool{"nport://h": false, "nport://h?cmd=none": true, "tcp://h:1": true, "telnet://h": true, "rfc2217://h:1": false, "/dev/ttyS0": false} {
		tg := mustParse(t, uri)
		if tg.FixedLine() != want {
			t.Errorf("%s: FixedLine %v, want %v", uri, tg.FixedLine(), want)
		}
		if got, wantAddr := tg.CmdAddr(), map[string]string{"nport://h": "h:966"}[uri]; got != wantAddr {
			t.Errorf("%s: CmdAddr %q, want %q", uri, got, wantAddr)
		}
	}
	if KindRFC2217.String() != "rfc2217" || Kind(0).String() != "Kind(0)" || Kind(9).String() != "Kind(9)" {
		t.Errorf("Kind strings: %v %v %v", KindRFC2217, Kind(0), Kind(9))
	}
}

func mustParse(t *testing.T, uri string) Target {
	t.Helper()
	tg, err := Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}
