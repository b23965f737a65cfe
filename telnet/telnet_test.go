package telnet

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// collect decodes in into a printable event list, copying event data.
func collect(t testing.TB, d *Decoder, chunks ...[]byte) ([]string, error) {
	t.Helper()
	var out []string
	var data []byte
	flush := func() {
		if len(data) > 0 {
			out = append(out, "data "+hex.EncodeToString(data))
			data = nil
		}
	}
	for _, c := range chunks {
		c = append([]byte(nil), c...)
		err := d.Decode(c, func(ev Event) error {
			switch ev.Kind {
			case EventData:
				data = append(data, ev.Data...) // coalesce across calls
			case EventCommand:
				flush()
				out = append(out, "cmd "+ev.Command.String())
			case EventNegotiation:
				flush()
				out = append(out, fmt.Sprintf("%v %v", ev.Command, ev.Option))
			case EventSubnegotiation:
				flush()
				out = append(out, fmt.Sprintf("sb %v %s", ev.Option, hex.EncodeToString(ev.Data)))
			}
			return nil
		})
		if err != nil {
			flush()
			return out, err
		}
	}
	flush()
	return out, nil
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeVectors(t *testing.T) {
	tests := []struct {
		name   string
		binary bool
		in     string // hex
		want   []string
	}{
		{"plain data", true, "41 42 43", []string{"data 414243"}},
		{"IAC IAC is 255", true, "41 ff ff 42", []string{"data 41ff42"}},
		{"NUL and XON are data in binary", true, "00 11 13 0d 00", []string{"data 0011130d00"}},
		{"CR NUL is CR in text mode", false, "41 0d 00 42", []string{"data 410d42"}},
		{"CR LF kept in text mode", false, "0d 0a", []string{"data 0d0a"}},
		{"CR CR NUL", false, "0d 0d 00", []string{"data 0d0d"}},
		{"IAC WILL AUTHENTICATION", true, "ff fb 25", []string{"WILL AUTHENTICATION"}},
		{"DO VMWARE-EXT between data", true, "61 ff fd e8 62", []string{"data 61", "DO VMWARE-TELNET-EXT", "data 62"}},
		// IAC SB VMWARE-TELNET-EXT DO-PROXY 'S' "vSPC.py" IAC SE
		{"DO-PROXY", true, "ff fa e8 46 53 76 53 50 43 2e 70 79 ff f0", []string{"sb VMWARE-TELNET-EXT 465376535043 2e7079"}},
		// IAC SB 232 BEGIN seq=76 19 ff e9 IAC SE (IAC doubled)
		{"SB with escaped IAC", true, "ff fa e8 28 76 19 ff ff e9 ff f0", []string{"sb VMWARE-TELNET-EXT 287619ffe9"}},
		{"empty SB", true, "ff fa 2c ff f0", []string{"sb COM-PORT-OPTION "}},
		{"commands", true, "ff f1 ff f3 ff f6", []string{"cmd NOP", "cmd BRK", "cmd AYT"}},
		{"unassigned command byte", true, "ff 10", []string{"cmd CMD(16)"}},
		{"two SBs and data", true, "ff fa e8 51 ff f0 41 ff fa e8 53 ff f0 42",
			[]string{"sb VMWARE-TELNET-EXT 51", "data 41", "sb VMWARE-TELNET-EXT 53", "data 42"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for split := 0; split <= len(unhex(t, tt.in)); split++ {
				in := unhex(t, tt.in)
				d := &Decoder{Binary: tt.binary}
				got, err := collect(t, d, in[:split], in[split:])
				if err != nil {
					t.Fatalf("split %d: %v", split, err)
				}
				want := make([]string, len(tt.want))
				for i, w := range tt.want {
					want[i] = strings.ReplaceAll(w, " ", "")
				}
				for i := range got {
					got[i] = strings.ReplaceAll(got[i], " ", "")
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("split %d:\n got %q\nwant %q", split, got, want)
				}
			}
		})
	}
}

func TestDecodeByteAtATime(t *testing.T) {
	in := unhex(t, "41 ff ff ff fa e8 28 76 19 ff ff e9 ff f0 0d 00 ff fb 25 42")
	d := &Decoder{Binary: true}
	chunks := make([][]byte, len(in))
	for i := range in {
		chunks[i] = in[i : i+1]
	}
	got, err := collect(t, d, chunks...)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"data 41ff", "sb VMWARE-TELNET-EXT 287619ffe9", "data 0d00", "WILL AUTHENTICATION", "data 42"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestSubnegotiationLimit(t *testing.T) {
	d := &Decoder{Binary: true, MaxSubnegotiation: 8}
	ok := unhex(t, "ff fa e8 01 02 03 04 05 06 07 08 ff f0")
	if _, err := collect(t, d, ok); err != nil {
		t.Fatalf("8-byte payload: %v", err)
	}
	tooLong := unhex(t, "ff fa e8 01 02 03 04 05 06 07 08 09 ff f0")
	for split := 0; split < len(tooLong); split++ {
		d := &Decoder{Binary: true, MaxSubnegotiation: 8}
		_, err := collect(t, d, tooLong[:split], tooLong[split:])
		var se *SubnegotiationError
		if !errors.As(err, &se) || !errors.Is(err, ErrSubnegotiationTooLong) {
			t.Fatalf("split %d: got %v, want ErrSubnegotiationTooLong", split, err)
		}
		if se.Option != VMwareExt || se.Limit != 8 {
			t.Errorf("error fields: %+v", se)
		}
		if got, want := err.Error(), "telnet: subnegotiation of VMWARE-TELNET-EXT exceeds 8 bytes"; got != want {
			t.Errorf("message %q, want %q", got, want)
		}
	}
	// Default limit.
	d = &Decoder{}
	big := append(unhex(t, "ff fa 2c"), bytes.Repeat([]byte{'x'}, DefaultMaxSubnegotiation+1)...)
	if _, err := collect(t, d, big); !errors.Is(err, ErrSubnegotiationTooLong) {
		t.Fatalf("default limit: %v", err)
	}
}

func TestMalformedSubnegotiation(t *testing.T) {
	d := &Decoder{Binary: true}
	_, err := collect(t, d, unhex(t, "ff fa e8 28 01 ff fb 25"))
	if !errors.Is(err, ErrMalformedSubnegotiation) {
		t.Fatalf("got %v", err)
	}
	if got := err.Error(); got != "telnet: IAC WILL inside subnegotiation of VMWARE-TELNET-EXT (after 2 bytes)" {
		t.Errorf("message %q", got)
	}
}

func TestInSubnegotiationReportsTruncation(t *testing.T) {
	d := &Decoder{Binary: true}
	if _, err := collect(t, d, unhex(t, "ff fa e8 46 53 61")); err != nil {
		t.Fatal(err)
	}
	if opt, ok := d.InSubnegotiation(); !ok || opt != VMwareExt {
		t.Fatalf("InSubnegotiation = %v, %v", opt, ok)
	}
}

func TestHandlerErrorStops(t *testing.T) {
	stop := errors.New("stop")
	d := &Decoder{Binary: true}
	n := 0
	err := d.Decode(unhex(t, "ff f1 ff f1 ff f1"), func(Event) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("err=%v n=%d", err, n)
	}
}

func TestEncoders(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"data", AppendData(nil, []byte{1, 0xff, 2, 0xff}), "01 ff ff 02 ff ff"},
		{"text CR", AppendText(nil, []byte("a\rb\r\n\r")), "61 0d 00 62 0d 0a 0d 00"},
		{"text IAC", AppendText(nil, []byte{0xff}), "ff ff"},
		{"command", AppendCommand(nil, BRK), "ff f3"},
		{"negotiation", AppendNegotiation(nil, DONT, Authentication), "ff fe 25"},
		// IAC SB 232 GOAHEAD seq=76 19 ff e9 secret=55 21 99 8c IAC SE
		{"subnegotiation escapes IAC", AppendSubnegotiation(nil, VMwareExt, []byte{0x29}, []byte{0x76, 0x19, 0xff, 0xe9}, []byte{0x55, 0x21, 0x99, 0x8c}),
			"ff fa e8 29 76 19 ff ff e9 55 21 99 8c ff f0"},
	}
	for _, tt := range tests {
		if got := hex.EncodeToString(tt.got); got != strings.ReplaceAll(tt.want, " ", "") {
			t.Errorf("%s: got % x, want %s", tt.name, tt.got, tt.want)
		}
	}
	if EscapedLen([]byte{0xff, 1, 0xff}) != 5 {
		t.Error("EscapedLen")
	}
}

// TestRoundTripRandom: random data (dense in 255, CR, NUL) interleaved with
// commands survives encode → split anywhere → decode exactly.
func TestRoundTripRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 300; iter++ {
		binary := iter%2 == 0
		var wire []byte
		var wantData []byte
		var wantSB [][]byte
		for k := 0; k < 20; k++ {
			chunk := make([]byte, rng.IntN(64))
			for i := range chunk {
				switch rng.IntN(5) {
				case 0:
					chunk[i] = 0xff
				case 1:
					chunk[i] = '\r'
				case 2:
					chunk[i] = 0
				default:
					chunk[i] = byte(rng.IntN(256))
				}
			}
			if binary {
				wire = AppendData(wire, chunk)
				wantData = append(wantData, chunk...)
			} else {
				wire = AppendText(wire, chunk)
				wantData = append(wantData, chunk...)
			}
			if rng.IntN(3) == 0 {
				sb := make([]byte, rng.IntN(40))
				for i := range sb {
					sb[i] = byte(rng.IntN(256))
				}
				wire = AppendSubnegotiation(wire, ComPort, sb)
				wantSB = append(wantSB, sb)
			}
		}
		d := &Decoder{Binary: binary}
		var gotData []byte
		var gotSB [][]byte
		rest := append([]byte(nil), wire...)
		for len(rest) > 0 {
			n := 1 + rng.IntN(len(rest))
			chunk := append([]byte(nil), rest[:n]...)
			rest = rest[n:]
			err := d.Decode(chunk, func(ev Event) error {
				switch ev.Kind {
				case EventData:
					gotData = append(gotData, ev.Data...)
				case EventSubnegotiation:
					gotSB = append(gotSB, append([]byte{}, ev.Data...))
				default:
					t.Fatalf("unexpected event %v", ev.Kind)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(gotData, wantData) {
			t.Fatalf("iter %d (binary=%v): data mismatch\n got % x\nwant % x", iter, binary, gotData, wantData)
		}
		if fmt.Sprint(gotSB) != fmt.Sprint(wantSB) {
			t.Fatalf("iter %d: SB mismatch", iter)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0xff, 0xfb, 0x25}, uint8(1), true)
	f.Add(unhex(f, "ff fa e8 28 76 19 ff ff e9 ff f0"), uint8(5), true)
	f.Add(unhex(f, "41 0d 00 ff ff 0d 0a"), uint8(3), false)
	f.Add(unhex(f, "ff fa e8 46 53 76 53 50 43 2e 70 79 ff f0"), uint8(0), true)
	f.Fuzz(func(t *testing.T, in []byte, split uint8, binary bool) {
		const limit = 64
		decode := func(chunks ...[]byte) (data []byte, sbs []string, err error) {
			d := &Decoder{Binary: binary, MaxSubnegotiation: limit}
			for _, c := range chunks {
				c = append([]byte(nil), c...)
				err = d.Decode(c, func(ev Event) error {
					switch ev.Kind {
					case EventData:
						data = append(data, ev.Data...)
					case EventSubnegotiation:
						if len(ev.Data) > limit {
							t.Fatalf("payload %d bytes over limit", len(ev.Data))
						}
						sbs = append(sbs, fmt.Sprintf("%d:%x", ev.Option, ev.Data))
					case EventNegotiation, EventCommand:
						sbs = append(sbs, fmt.Sprintf("%v/%v", ev.Command, ev.Option))
					}
					return nil
				})
				if err != nil {
					return
				}
			}
			return
		}
		whole, wholeEv, err1 := decode(in)
		s := int(split) % (len(in) + 1)
		parts, partsEv, err2 := decode(in[:s], in[s:])
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("split changes outcome: %v vs %v", err1, err2)
		}
		if err1 == nil {
			if !bytes.Equal(whole, parts) || fmt.Sprint(wholeEv) != fmt.Sprint(partsEv) {
				t.Fatalf("split at %d changes the decoding", s)
			}
			// Re-encode the data: decoding it again gives the same bytes.
			enc := AppendData(nil, whole)
			if !binary {
				enc = AppendText(nil, whole)
			}
			again, _, err := decode(enc)
			if err != nil || !bytes.Equal(again, whole) {
				t.Fatalf("data does not round-trip: %v", err)
			}
		}
	})
}

func BenchmarkDecodePlain(b *testing.B) {
	in := make([]byte, 32*1024)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range in {
		in[i] = byte(rng.IntN(255)) // no 255
	}
	benchDecode(b, in)
}

func BenchmarkDecodeIACDense(b *testing.B) {
	raw := make([]byte, 16*1024)
	for i := range raw {
		if i%2 == 0 {
			raw[i] = 0xff
		} else {
			raw[i] = byte(i)
		}
	}
	benchDecode(b, AppendData(nil, raw))
}

func benchDecode(b *testing.B, in []byte) {
	buf := make([]byte, len(in))
	d := &Decoder{Binary: true}
	var n int
	h := func(ev Event) error { n += len(ev.Data); return nil }
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, in)
		if err := d.Decode(buf, h); err != nil {
			b.Fatal(err)
		}
	}
	_ = n
}

func BenchmarkAppendData(b *testing.B) {
	raw := make([]byte, 32*1024)
	for i := range raw {
		raw[i] = byte(i)
	}
	dst := make([]byte, 0, 2*len(raw))
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendData(dst[:0], raw)
	}
}
