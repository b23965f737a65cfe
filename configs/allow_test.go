package configs

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"
)

func TestAllow(t *testing.T) {
	type probe struct {
		host string // IP literal (checked with AllowAddr and AllowName) or name (AllowName)
		port int
		want bool
	}
	tests := []struct {
		name   string
		rules  []string
		probes []probe
	}{
		{"empty denies everything", nil, []probe{
			{"127.0.0.1", 23, false}, {"::1", 23, false}, {"localhost", 23, false}, {"0.0.0.0", 1, false},
		}},
		{"ipv4 cidr any port", []string{"10.1.0.0/16"}, []probe{
			{"10.1.0.0", 1, true}, {"10.1.255.255", 65535, true}, {"10.2.0.1", 23, false}, {"10.1.0.1", 0, false}, {"10.1.0.1", 65536, false},
		}},
		{"ipv4 single ip", []string{"127.0.0.1"}, []probe{
			{"127.0.0.1", 4001, true}, {"127.0.0.2", 4001, false},
		}},
		{"ipv4 cidr one port", []string{"10.1.0.0/16:4001"}, []probe{
			{"10.1.2.3", 4001, true}, {"10.1.2.3", 4002, false},
		}},
		{"ipv4 cidr port range", []string{"10.1.0.0/16:4001-4004"}, []probe{
			{"10.1.2.3", 4000, false}, {"10.1.2.3", 4001, true}, {"10.1.2.3", 4004, true}, {"10.1.2.3", 4005, false},
		}},
		{"ipv4 ip with port", []string{"192.0.2.7:23"}, []probe{
			{"192.0.2.7", 23, true}, {"192.0.2.7", 24, false},
		}},
		{"ipv4 star port", []string{"192.0.2.0/24:*"}, []probe{
			{"192.0.2.9", 1, true}, {"192.0.2.9", 65535, true},
		}},
		{"ipv6 bracketed cidr", []string{"[::1]/128"}, []probe{
			{"::1", 22, true}, {"::2", 22, false}, {"127.0.0.1", 22, false},
		}},
		{"ipv6 bare", []string{"::1"}, []probe{
			{"::1", 22, true}, {"[::1]", 22, true}, {"::2", 22, false},
		}},
		{"ipv6 bare cidr", []string{"fd00::/8"}, []probe{
			{"fd12:3456::1", 23, true}, {"fe80::1", 23, false},
		}},
		{"ipv6 cidr with port", []string{"[fd00::]/8:23"}, []probe{
			{"fd00::5", 23, true}, {"fd00::5", 24, false}, {"fe00::5", 23, false},
		}},
		{"ipv6 ip with port", []string{"[2001:db8::1]:4001-4002"}, []probe{
			{"2001:db8::1", 4002, true}, {"2001:db8::1", 4003, false}, {"2001:db8::2", 4001, false},
		}},
		{"mapped address matches ipv4 rule", []string{"10.0.0.0/8"}, []probe{
			{"::ffff:10.1.2.3", 23, true}, {"::ffff:11.1.2.3", 23, false},
		}},
		{"mapped rule matches ipv4", []string{"[::ffff:10.0.0.0]/104"}, []probe{
			{"10.1.2.3", 23, true}, {"::ffff:10.1.2.3", 23, true}, {"11.0.0.1", 23, false},
		}},
		{"zone ignored", []string{"fe80::/10:23"}, []probe{
			{"fe80::1%eth0", 23, false}, // bare ipv6 with port must be bracketed: rule is an error, see below
		}},
		{"ipv6 all does not cover ipv4", []string{"[::]/0"}, []probe{
			{"2001:db8::1", 1, true}, {"10.0.0.1", 1, false},
		}},
		{"host glob", []string{"nport-*.lab:4001"}, []probe{
			{"nport-1.lab", 4001, true}, {"NPORT-7.LAB.", 4001, true}, {"nport-1.lab", 4002, false}, {"nport.lab", 4001, false}, {"x.nport-1.lab", 4001, false},
		}},
		{"host glob any port", []string{"*.console.example:*"}, []probe{
			{"a.console.example", 1, true}, {"a.b.console.example", 65535, true}, {"console.example", 23, false},
		}},
		{"localhost", []string{"localhost:*"}, []probe{
			{"localhost", 22, true}, {"localhost.", 22, true}, {"localhost2", 22, false}, {"127.0.0.1", 22, false},
		}},
		{"host rules never match ip literals", []string{"*:*"}, []probe{
			{"anything.example", 1, true}, {"10.0.0.1", 1, false}, {"::1", 1, false},
		}},
		{"host range", []string{"ts?.lab:2001-2016"}, []probe{
			{"ts1.lab", 2016, true}, {"ts10.lab", 2001, false}, {"ts1.lab", 2017, false},
		}},
		{"character class", []string{"ts[0-3].lab:23"}, []probe{
			{"ts2.lab", 23, true}, {"ts4.lab", 23, false},
		}},
		{"mixed", []string{"10.0.0.0/8:23", "[::1]/128", "ser2net.lab:2000-2099"}, []probe{
			{"10.9.9.9", 23, true}, {"10.9.9.9", 22, false}, {"::1", 9, true}, {"ser2net.lab", 2050, true}, {"ser2net.lab", 23, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAllow(tt.rules)
			if tt.name == "zone ignored" {
				if err == nil {
					t.Fatalf("ParseAllow(%q) accepted an unbracketed IPv6 rule with a port", tt.rules)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Empty() != (len(tt.rules) == 0) {
				t.Errorf("Empty() = %v", a.Empty())
			}
			for _, p := range tt.probes {
				got := a.AllowName(p.host, p.port)
				if ip, err := netip.ParseAddr(p.host); err == nil {
					if g := a.AllowAddr(ip, p.port); g != got {
						t.Errorf("AllowAddr(%s, %d) = %v but AllowName = %v", p.host, p.port, g, got)
					}
				}
				if got != p.want {
					t.Errorf("allow %s port %d = %v, want %v", p.host, p.port, got, p.want)
				}
			}
			// String re-parses to the same rules.
			if len(tt.rules) > 0 {
				b, err := ParseAllow(strings.Split(a.String(), ", "))
				if err != nil || b.String() != a.String() {
					t.Errorf("String %q does not round-trip: %v, %v", a.String(), b, err)
				}
			}
		})
	}
}

func TestAllowZone(t *testing.T) {
	a, err := ParseAllow([]string{"[fe80::]/10:23"})
	if err != nil {
		t.Fatal(err)
	}
	if !a.AllowAddr(netip.MustParseAddr("fe80::1%eth0"), 23) {
		t.Errorf("zone not ignored")
	}
	if a.AllowAddr(netip.Addr{}, 23) {
		t.Errorf("zero Addr allowed")
	}
	var nilAllow *Allow
	if nilAllow.AllowAddr(netip.MustParseAddr("::1"), 1) || nilAllow.AllowName("x", 1) || !nilAllow.Empty() {
		t.Errorf("nil Allow allows something")
	}
}

func TestParseAllowErrors(t *testing.T) {
	bad := []string{
		"",
		" 10.0.0.0/8",
		"localhost",             // host without port
		"nport-*",               // host without port
		"10.1.2.3/16",           // host bits
		"10.0.0.0/33",           // prefix too long
		"10.0.0.0/-1",           // prefix negative
		"10.0.0.0/08",           // leading zero
		"10.0.0.0/",             // empty prefix
		"10.0.0.0/8:",           // empty port
		"10.0.0.0/8:0",          // port 0
		"10.0.0.0/8:65536",      // port too big
		"10.0.0.0/8:4004-4001",  // reversed range
		"10.0.0.0/8:1-",         // half range
		"10.0.0.0/8:abc",        // not a port
		"fd00::/8:23",           // IPv6 with port, not bracketed
		"[fd00::]/8:",           // empty port
		"[fd00::",               // unterminated
		"[10.0.0.1]",            // IPv4 in brackets
		"[fd00::]x",             // junk after bracket
		"[fe80::1%eth0]",        // zone
		"host/8:23",             // host with slash
		"a:b:c",                 // too many colons
		"bad host!:23",          // bad characters
		"nport-[.lab:23",        // bad glob
		"*.lab:*:*",             // junk
		"1.2.3.4.5:23",          // glob-valid chars but... accepted as a host pattern? (see below)
		"10.0.0.0/8:+1",         // plus sign
		"example.com:023",       // leading zero
		"::ffff:10.0.0.1/97:23", // v6 with port unbracketed
		"[::ffff:10.0.0.1]/129", // prefix too long
		"[::1]/128:1:2",         // junk
		"*:",                    // empty port
		":23",                   // empty host
	}
	for _, e := range bad {
		_, err := ParseAllow([]string{e})
		if e == "1.2.3.4.5:23" {
			// Not an IP, but a valid host glob: it matches the name
			// "1.2.3.4.5", which no resolver returns. Accepted.
			if err != nil {
				t.Errorf("ParseAllow(%q): %v", e, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseAllow(%q) accepted a bad entry", e)
			continue
		}
		if !strings.HasPrefix(err.Error(), "configs: connect_allow[0]: ") {
			t.Errorf("ParseAllow(%q) error %q lacks prefix", e, err)
		}
	}
}

func TestParseAllowReportsAll(t *testing.T) {
	_, err := ParseAllow([]string{"10.0.0.0/8", "x", "127.0.0.1", "y:0", "[::1]/200"})
	var m *multierror.Error
	if !errors.As(err, &m) {
		t.Fatalf("error %T, want *multierror.Error", err)
	}
	if len(m.Errors) != 3 {
		t.Fatalf("got %d errors, want 3:\n%v", len(m.Errors), err)
	}
	for i, idx := range []string{"[1]", "[3]", "[4]"} {
		if !strings.Contains(m.Errors[i].Error(), "connect_allow"+idx) {
			t.Errorf("error %d = %q, want index %s", i, m.Errors[i], idx)
		}
	}
	if strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("error text not one per line:\n%s", err)
	}
}
