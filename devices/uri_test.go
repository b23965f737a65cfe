package devices

import (
	"errors"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

func TestParseURI(t *testing.T) {
	s115200 := rfc2217.Settings{Baud: 115200, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone}
	good := []struct {
		uri  string
		want Target
	}{
		{"tcp://10.0.0.5:4001", Target{Kind: KindTCP, Host: "10.0.0.5", Port: 4001}},
		{"TCP://moxa-1.lab:4002", Target{Kind: KindTCP, Host: "moxa-1.lab", Port: 4002}},
		{"tcp://[::1]:7000", Target{Kind: KindTCP, Host: "::1", Port: 7000}},
		{"nport://192.168.127.254", Target{Kind: KindNPort, Host: "192.168.127.254", Port: 4001}},
		{"nport://192.168.127.254:4004", Target{Kind: KindNPort, Host: "192.168.127.254", Port: 4004}},
		{"nport://np1?baud=115200&databits=8&parity=none&stopbits=1&flow=none", Target{Kind: KindNPort, Host: "np1", Port: 4001, Settings: s115200}},
		{"telnet://linuxbox", Target{Kind: KindTelnet, Host: "linuxbox", Port: 23}},
		{"telnet://linuxbox:2323", Target{Kind: KindTelnet, Host: "linuxbox", Port: 2323}},
		{"rfc2217://ts1:7001", Target{Kind: KindRFC2217, Host: "ts1", Port: 7001}},
		{"rfc2217://ts1:7001/", Target{Kind: KindRFC2217, Host: "ts1", Port: 7001}}, // a trailing slash, as configs accepts
		{"tcp://10.0.0.5:4001/?baud=9600", Target{Kind: KindTCP, Host: "10.0.0.5", Port: 4001, Settings: rfc2217.Settings{Baud: 9600}}},
		{"rfc2217://ts1:7001?baud=57600&stopbits=2", Target{Kind: KindRFC2217, Host: "ts1", Port: 7001, Settings: rfc2217.Settings{Baud: 57600, StopSize: rfc2217.Stop2}}},
		{"serial:///dev/ttyUSB0?baud=115200&parity=none&databits=8&stopbits=1&flow=none", Target{Kind: KindSerial, Path: "/dev/ttyUSB0", Settings: s115200}},
		{"serial:///dev/ttyS1?parity=E&databits=7&stopbits=1.5&flow=RTSCTS", Target{Kind: KindSerial, Path: "/dev/ttyS1", Settings: rfc2217.Settings{DataSize: 7, Parity: rfc2217.ParityEven, StopSize: rfc2217.Stop15, Flow: rfc2217.FlowHardware}}},
		{"serial:///dev/serial/by-id/usb-FTDI%20X-if00?flow=xonxoff", Target{Kind: KindSerial, Path: "/dev/serial/by-id/usb-FTDI X-if00", Settings: rfc2217.Settings{Flow: rfc2217.FlowXONXOFF}}},
		{"serial:///dev/ttyS0?parity=mark&baud=250000", Target{Kind: KindSerial, Path: "/dev/ttyS0", Settings: rfc2217.Settings{Baud: 250000, Parity: rfc2217.ParityMark}}},
		{"/dev/ttyUSB0", Target{Kind: KindSerial, Path: "/dev/ttyUSB0"}},
		{"/dev/ttyS0?baud=9600", Target{Kind: KindSerial, Path: "/dev/ttyS0?baud=9600"}}, // a plain path is taken verbatim
	}
	for _, tc := range good {
		got, err := ParseURI(tc.uri)
		if err != nil {
			t.Errorf("ParseURI(%q): %v", tc.uri, err)
			continue
		}
		tc.want.Raw = tc.uri
		if got != tc.want {
			t.Errorf("ParseURI(%q)\n got %+v\nwant %+v", tc.uri, got, tc.want)
		}
		again, err := ParseURI(got.String())
		again.Raw = got.Raw
		if err != nil || again != got {
			t.Errorf("ParseURI(%q).String() = %q does not round-trip: %+v, %v", tc.uri, got.String(), again, err)
		}
	}

	bad := []struct{ uri, msg string }{
		{"foo://x", `devices: unknown scheme "foo" in "foo://x" (want tcp, nport, telnet, rfc2217, serial or a /dev path)`},
		{"", `devices: empty URI in "" (want tcp, nport, telnet, rfc2217, serial or a /dev path)`},
		{"lab-router-3", `devices: no scheme in "lab-router-3" (want scheme://… or an absolute /dev path)`},
		{"10.0.0.5:4001", `devices: no scheme in "10.0.0.5:4001" (want scheme://… or an absolute /dev path)`},
		{"tcp://host", `devices: missing port in "tcp://host" (want tcp://host:port)`},
		{"tcp://host:", `devices: bad port "" in "tcp://host:" (want a port number 1–65535)`},
		{"tcp://:4001", `devices: missing host in "tcp://:4001" (want tcp://host:port)`},
		{"tcp://host:0", `devices: bad port "0" in "tcp://host:0" (want a port number 1–65535)`},
		{"tcp://host:65536", `devices: bad port "65536" in "tcp://host:65536" (want a port number 1–65535)`},
		{"tcp://host:http", `devices: bad port "http" in "tcp://host:http" (want a port number 1–65535)`},
		{"tcp://host:4001/x", `devices: unexpected path "/x" in "tcp://host:4001/x" (want tcp://host:port)`},
		{"tcp://user@host:4001", `devices: user info not allowed in "tcp://user@host:4001" (want tcp://host:port)`},
		{"tcp://::1:4001", `devices: too many colons in "::1:4001" in "tcp://::1:4001" (write IPv6 addresses as [addr]:port)`},
		{"tcp://[10.0.0.1]:4001", `devices: bad IPv6 address "10.0.0.1" in "tcp://[10.0.0.1]:4001" (want an IPv6 address inside [ ])`},
		{"tcp://[::1:4001", `devices: missing ']' in host "[::1:4001" in "tcp://[::1:4001" (want tcp://host:port)`},
		{"tcp://ho st:1", `devices: bad character ' ' in host "ho st" in "tcp://ho st:1" (want tcp://host:port)`},
		{"tcp://h:1#frag", `devices: fragment not allowed in "tcp://h:1#frag"`},
		{"rfc2217://ts1", `devices: missing port in "rfc2217://ts1" (want rfc2217://host:port)`},
		{"nport://", `devices: missing host in "nport://" (want nport://host[:port], port defaults to 4001)`},
		{"serial://dev/ttyUSB0", `devices: host "dev" in serial URI in "serial://dev/ttyUSB0" (want serial:///dev/ttyUSB0, with three slashes)`},
		{"/", `devices: missing device path in "/" (want a device path such as /dev/ttyUSB0)`}, // fuzz crasher: canonical form did not parse
		{"serial:///", `devices: missing device path in "serial:///" (want serial:///dev/ttyUSB0)`},
		{"serial:///dev/ttyS0?baud=fast", `devices: bad baud "fast" (want 1–4294967295) in "serial:///dev/ttyS0?baud=fast"`},
		{"serial:///dev/ttyS0?baud=0", `devices: bad baud "0" (want 1–4294967295) in "serial:///dev/ttyS0?baud=0"`},
		{"serial:///dev/ttyS0?parity=x", `devices: bad parity "x" (want none, odd, even, mark or space) in "serial:///dev/ttyS0?parity=x"`},
		{"serial:///dev/ttyS0?databits=9", `devices: bad databits "9" (want 5, 6, 7 or 8) in "serial:///dev/ttyS0?databits=9"`},
		{"serial:///dev/ttyS0?stopbits=3", `devices: bad stopbits "3" (want 1, 1.5 or 2) in "serial:///dev/ttyS0?stopbits=3"`},
		{"serial:///dev/ttyS0?flow=dtr", `devices: bad flow "dtr" (want none, xonxoff or rtscts) in "serial:///dev/ttyS0?flow=dtr"`},
		{"serial:///dev/ttyS0?speed=9600", `devices: unknown parameter "speed" (want baud, parity, databits, stopbits or flow) in "serial:///dev/ttyS0?speed=9600"`},
		{"serial:///dev/ttyS0?baud=9600&baud=19200", `devices: parameter "baud" given twice in "serial:///dev/ttyS0?baud=9600&baud=19200"`},
	}
	for _, tc := range bad {
		_, err := ParseURI(tc.uri)
		if err == nil {
			t.Errorf("ParseURI(%q): no error, want %s", tc.uri, tc.msg)
			continue
		}
		if err.Error() != tc.msg {
			t.Errorf("ParseURI(%q):\n got %s\nwant %s", tc.uri, err, tc.msg)
		}
		var ue *URIError
		if !errors.As(err, &ue) || ue.URI != tc.uri {
			t.Errorf("ParseURI(%q): error %T is not a *URIError for the URI", tc.uri, err)
		}
	}
}

// FuzzParseURI: never panics; whatever parses has a canonical form that
// parses to the same Target; network targets have a host and a valid port.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"tcp://10.0.0.5:4001", "nport://np1", "telnet://h", "rfc2217://[::1]:7001?baud=57600&stopbits=2",
		"serial:///dev/ttyUSB0?baud=115200&parity=none&databits=8&stopbits=1&flow=none", "/dev/ttyS0",
		"serial:///dev/a%20b", "foo://x", "tcp://h:1#x", "serial://x/y", "tcp://[::1", "tcp://h:+1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		tg, err := ParseURI(uri)
		if err != nil {
			var ue *URIError
			if !errors.As(err, &ue) {
				t.Fatalf("error %T is not a *URIError: %v", err, err)
			}
			return
		}
		if tg.Raw != uri {
			t.Fatalf("Raw = %q, want %q", tg.Raw, uri)
		}
		switch tg.Kind {
		case KindSerial:
			if tg.Path == "" || tg.Path[0] != '/' {
				t.Fatalf("serial target with path %q", tg.Path)
			}
		case KindTCP, KindNPort, KindTelnet, KindRFC2217:
			if tg.Host == "" || tg.Port < 1 || tg.Port > 65535 {
				t.Fatalf("network target %+v", tg)
			}
		default:
			t.Fatalf("kind %v", tg.Kind)
		}
		again, err := ParseURI(tg.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", tg.String(), uri, err)
		}
		again.Raw = tg.Raw
		if again != tg {
			t.Fatalf("round trip of %q via %q: %+v != %+v", uri, tg.String(), again, tg)
		}
	})
}

func TestTargetKey(t *testing.T) {
	same := [][]string{
		{"tcp://Moxa1:4001", "nport://moxa1", "nport://MOXA1:4001?baud=9600", "tcp://moxa1:4001?baud=115200"},
		{"/dev/ttyUSB0", "serial:///dev/ttyUSB0", "serial:///dev/ttyUSB0?baud=9600"},
		{"rfc2217://ts:7001", "RFC2217://TS:7001?stopbits=2", "telnet://ts:7001", "tcp://ts:7001"},
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

func TestKindFixedLine(t *testing.T) {
	for k, want := range map[Kind]bool{KindTCP: true, KindNPort: true, KindTelnet: true, KindRFC2217: false, KindSerial: false} {
		if k.FixedLine() != want {
			t.Errorf("%v.FixedLine() = %v, want %v", k, !want, want)
		}
	}
}
