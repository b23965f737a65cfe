package vspc_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/telnet"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

func unhexField(tb testing.TB, s string) []byte {
	tb.Helper()
	s = strings.TrimSpace(s)
	if s == "-" {
		return nil
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		tb.Fatalf("%q: %v", s, err)
	}
	return b
}

// seedVector is one row of ../testdata/seed-tables-2-1-to-2-6.vectors.
type seedVector struct {
	name    string
	subopt  int // -1 for option negotiation (table 2-1)
	payload []byte
	wire    []byte
}

// seedVectors reads every message of the seed's tables 2-1 to 2-6.
func seedVectors(tb testing.TB) []seedVector {
	tb.Helper()
	f, err := os.Open("../testdata/seed-tables-2-1-to-2-6.vectors")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []seedVector
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		col := strings.Split(line, "|")
		if len(col) != 5 {
			tb.Fatalf("bad row %q", line)
		}
		v := seedVector{name: strings.TrimSpace(col[0]), subopt: -1, payload: unhexField(tb, col[3]), wire: unhexField(tb, col[4])}
		if sub := strings.TrimSpace(col[2]); sub != "-" {
			if v.subopt, err = strconv.Atoi(sub); err != nil || v.subopt < 0 || v.subopt > 255 {
				tb.Fatalf("bad suboption in %q", line)
			}
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestSeedTableVectors checks every message of the seed's tables 2-1 to 2-6
// both ways: encoding gives the wire bytes; decoding the wire bytes gives
// the suboption and payload back.
func TestSeedTableVectors(t *testing.T) {
	vectors := seedVectors(t)
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			var d telnet.Decoder
			d.Binary = true
			var events []telnet.Event
			if err := d.Decode(append([]byte(nil), v.wire...), func(ev telnet.Event) error {
				ev.Data = append([]byte(nil), ev.Data...)
				events = append(events, ev)
				return nil
			}); err != nil || len(events) != 1 {
				t.Fatalf("decode: %v, %d events", err, len(events))
			}
			ev := events[0]
			if v.subopt < 0 { // option negotiation (table 2-1)
				if ev.Kind != telnet.EventNegotiation || ev.Option != telnet.VMwareExt {
					t.Fatalf("decoded %+v", ev)
				}
				if got := telnet.AppendNegotiation(nil, ev.Command, telnet.VMwareExt); !bytes.Equal(got, v.wire) {
					t.Fatalf("encode % x, want % x", got, v.wire)
				}
				return
			}
			if got := vspc.AppendExt(nil, vspc.Subopt(v.subopt), v.payload); !bytes.Equal(got, v.wire) {
				t.Fatalf("encode\n % x\nwant\n % x", got, v.wire)
			}
			if ev.Kind != telnet.EventSubnegotiation || ev.Option != telnet.VMwareExt {
				t.Fatalf("decoded %+v", ev)
			}
			m, err := vspc.ParseExt(ev.Data)
			if err != nil || m.Cmd != vspc.Subopt(v.subopt) || !bytes.Equal(m.Payload, v.payload) {
				t.Fatalf("parse: %v %v % x", err, m.Cmd, m.Payload)
			}
			if strings.HasPrefix(v.name, "KNOWN-SUBOPTIONS-2") {
				if got := vspc.AppendKnownSuboptions2(nil); !bytes.Equal(got, v.wire) {
					t.Fatalf("our KNOWN-SUBOPTIONS-2 is % x", got)
				}
			}
			if m.Cmd.String() == "" || strings.HasPrefix(m.Cmd.String(), "SUBOPT(") {
				t.Fatalf("no name for %d", v.subopt)
			}
		})
	}
	if len(vectors) < 29 {
		t.Fatalf("only %d vectors", len(vectors))
	}
}

func TestParseDoProxyErrors(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want error
	}{
		{"", vspc.ErrBadDirection},
		{"X", vspc.ErrBadDirection},
		{"C", vspc.ErrEmptyURI},
		{"Stelnet://a\nb", vspc.ErrBadServiceURI},
	} {
		_, err := vspc.ParseDoProxy([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want.Error()) {
			t.Errorf("ParseDoProxy(%q) = %v, want %v", tt.in, err, tt.want)
		}
	}
	req, err := vspc.ParseDoProxy([]byte("SvSPC.py?port=com2"))
	if err != nil || req.Direction != vspc.DirServer || req.ServiceURI != "vSPC.py?port=com2" {
		t.Fatalf("got %+v %v", req, err)
	}
}
