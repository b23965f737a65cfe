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

func unhexField(t *testing.T, s string) []byte {
	t.Helper()
	s = strings.TrimSpace(s)
	if s == "-" {
		return nil
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return b
}

// TestSeedTableVectors checks every message of the seed's tables 2-1 to 2-6
// both ways: encoding gives the wire bytes; decoding the wire bytes gives
// the suboption and payload back.
func TestSeedTableVectors(t *testing.T) {
	f, err := os.Open("../testdata/seed-tables-2-1-to-2-6.vectors")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	rows := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		col := strings.Split(line, "|")
		if len(col) != 5 {
			t.Fatalf("bad row %q", line)
		}
		name := strings.TrimSpace(col[0])
		sub, payload, wire := strings.TrimSpace(col[2]), unhexField(t, col[3]), unhexField(t, col[4])
		rows++
		t.Run(name, func(t *testing.T) {
			var d telnet.Decoder
			d.Binary = true
			var events []telnet.Event
			if err := d.Decode(append([]byte(nil), wire...), func(ev telnet.Event) error {
				ev.Data = append([]byte(nil), ev.Data...)
				events = append(events, ev)
				return nil
			}); err != nil || len(events) != 1 {
				t.Fatalf("decode: %v, %d events", err, len(events))
			}
			ev := events[0]
			if sub == "-" { // option negotiation (table 2-1)
				if ev.Kind != telnet.EventNegotiation || ev.Option != telnet.VMwareExt {
					t.Fatalf("decoded %+v", ev)
				}
				if got := telnet.AppendNegotiation(nil, ev.Command, telnet.VMwareExt); !bytes.Equal(got, wire) {
					t.Fatalf("encode % x, want % x", got, wire)
				}
				return
			}
			code, _ := strconv.Atoi(sub)
			if got := vspc.AppendExt(nil, vspc.Subopt(code), payload); !bytes.Equal(got, wire) {
				t.Fatalf("encode\n % x\nwant\n % x", got, wire)
			}
			if ev.Kind != telnet.EventSubnegotiation || ev.Option != telnet.VMwareExt {
				t.Fatalf("decoded %+v", ev)
			}
			m, err := vspc.ParseExt(ev.Data)
			if err != nil || m.Cmd != vspc.Subopt(code) || !bytes.Equal(m.Payload, payload) {
				t.Fatalf("parse: %v %v % x", err, m.Cmd, m.Payload)
			}
			if strings.HasPrefix(name, "KNOWN-SUBOPTIONS-2") {
				if got := vspc.AppendKnownSuboptions2(nil); !bytes.Equal(got, wire) {
					t.Fatalf("our KNOWN-SUBOPTIONS-2 is % x", got)
				}
			}
			if m.Cmd.String() == "" || strings.HasPrefix(m.Cmd.String(), "SUBOPT(") {
				t.Fatalf("no name for %d", code)
			}
		})
	}
	if rows < 29 {
		t.Fatalf("only %d vectors", rows)
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
