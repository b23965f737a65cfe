package telnet

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// A handler that stops at an event leaves the rest of the input as it
// came, and the decoder where it stood: another decoder restored to the
// same state decodes the rest exactly as this one would have.
func TestDecodeNStops(t *testing.T) {
	stop := errors.New("stop")
	for _, tc := range []struct {
		name   string
		binary bool
		in     string
		at     int    // stop at the at-th event (0-based)
		n      int    // want n
		rest   string // the events of the rest, decoded by the same decoder
	}{
		// ESXi's destination sends VMOTION-PEER and WILL COM-PORT-OPTION in
		// one segment (esxi-wire.md §4.2): stopping at the PEER leaves WILL 44.
		{"PEER then WILL 44", true, "ff fa e8 2c 44 da 87 f1 3c e6 4d ab ff f0 ff fb 2c", 0, 14, "[WILL COM-PORT-OPTION]"},
		{"negotiation", true, "ff fb 00 41 42", 0, 3, "[data 4142]"},
		{"data run ends at a negotiation", true, "41 42 ff fb 01 43", 0, 2, "[WILL ECHO data 43]"},
		{"data run ends at an escaped IAC and an SB", true, "41 ff ff 42 ff fa e8 00 ff f0", 0, 4, "[sb VMWARE-TELNET-EXT 00]"},
		{"data run ends at a command", true, "41 ff f3 42", 0, 1, "[cmd BRK data 42]"},
		{"data run ends at an incomplete element", true, "41 ff fa e8", 0, 1, "[]"},
		{"text: CR before IAC", false, "0d ff f1 00 41", 0, 1, "[cmd NOP data 0041]"},
		{"text: CR at the end", false, "41 0d", 0, 2, "[]"},
		{"second of three", true, "ff fb 00 ff fd 00 ff fb 03", 1, 6, "[WILL SGA]"},
		{"SB with an escaped IAC", true, "ff fa e8 28 76 19 ff ff e9 ff f0 ff f1", 0, 11, "[cmd NOP]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := unhex(t, tc.in)
			orig := append([]byte(nil), in...)
			d := &Decoder{Binary: tc.binary}
			k := 0
			n, err := d.DecodeN(in, func(ev Event) error {
				k++
				if k-1 == tc.at {
					return stop
				}
				return nil
			})
			if !errors.Is(err, stop) {
				t.Fatalf("err %v, want the handler's", err)
			}
			if n != tc.n {
				t.Fatalf("n = %d, want %d", n, tc.n)
			}
			if !bytes.Equal(in[n:], orig[n:]) {
				t.Fatalf("the rest was rewritten: % x, want % x", in[n:], orig[n:])
			}
			got, err := collect(t, d, orig[n:])
			if err != nil || fmt.Sprint(got) != tc.rest {
				t.Fatalf("the rest decodes to %v (%v), want %s", got, err, tc.rest)
			}
		})
	}
}

// FuzzDecodeN: stopping anywhere and decoding the rest with the same
// decoder gives the events of one decoding, in order, and never rewrites
// the rest.
func FuzzDecodeN(f *testing.F) {
	f.Add(unhex(f, "ff fa e8 2c 44 da 87 f1 3c e6 4d ab ff f0 ff fb 2c"), uint8(0), uint8(0), true)
	f.Add(unhex(f, "41 42 ff fb 01 43 ff ff 0d 00 0d ff f1"), uint8(1), uint8(4), false)
	f.Add(unhex(f, "41 ff fa e8 01 02"), uint8(0), uint8(3), true)
	f.Fuzz(func(t *testing.T, in []byte, at, split uint8, binary bool) {
		stop := errors.New("stop")
		var events []string
		rec := func(ev Event) {
			switch ev.Kind {
			case EventData:
				if len(events) > 0 && bytes.HasPrefix([]byte(events[len(events)-1]), []byte("data ")) {
					events[len(events)-1] += fmt.Sprintf("%x", ev.Data)
					return
				}
				events = append(events, fmt.Sprintf("data %x", ev.Data))
			default:
				events = append(events, fmt.Sprintf("%v %v %v %x", ev.Kind, ev.Command, ev.Option, ev.Data))
			}
		}
		whole := &Decoder{Binary: binary, MaxSubnegotiation: 64}
		if err := whole.Decode(append([]byte(nil), in...), func(ev Event) error { rec(ev); return nil }); err != nil {
			return // out of sync: nothing to hand on
		}
		want := events
		events = nil
		d := &Decoder{Binary: binary, MaxSubnegotiation: 64}
		s := int(split) % (len(in) + 1)
		chunks := [][]byte{append([]byte(nil), in[:s]...), append([]byte(nil), in[s:]...)}
		k := 0
		stopped := false
		for i := 0; i < len(chunks); i++ {
			c := chunks[i]
			orig := append([]byte(nil), c...)
			n, err := d.DecodeN(c, func(ev Event) error {
				rec(ev)
				k++
				if !stopped && k-1 == int(at) {
					stopped = true
					return stop
				}
				return nil
			})
			if err != nil && !errors.Is(err, stop) {
				t.Fatalf("decoding error %v where one decoding had none", err)
			}
			if err == nil && n != len(c) {
				t.Fatalf("n = %d without a stop, want %d", n, len(c))
			}
			if n < 0 || n > len(c) || !bytes.Equal(c[n:], orig[n:]) {
				t.Fatalf("n = %d: the rest was rewritten", n)
			}
			if err != nil && n < len(c) {
				chunks[i] = orig[n:] // the rest goes on from here
				i--
			}
		}
		if fmt.Sprint(events) != fmt.Sprint(want) {
			t.Fatalf("stopped at event %d (split %d):\n got %v\nwant %v", at, s, events, want)
		}
	})
}

// The negotiation state survives AppendState and ParseState exactly,
// queued answers included, and a restored side goes on negotiating as the
// original would.
func TestOptionsState(t *testing.T) {
	var o Options
	o.Accept(Remote, Binary, true)
	o.Accept(Local, Echo, true)
	out := o.Enable(nil, Local, Binary)      // WANTYES
	out = o.Enable(out, Remote, SuppressGA)  // WANTYES
	out, _ = o.Receive(out, DO, Binary)      // YES
	out = o.Disable(out, Remote, SuppressGA) // WANTYES|OPPOSITE
	out, _ = o.Receive(out, WILL, Binary)    // remote YES
	out = o.Enable(out, Local, Option(200))  // WANTYES on a high option
	_ = out
	b := o.AppendState([]byte("prefix"))
	var r Options
	rest, err := r.ParseState(append(b[len("prefix"):], 0xaa))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rest, []byte{0xaa}) {
		t.Fatalf("rest % x", rest)
	}
	if r != o {
		t.Fatalf("restored %+v\nwant %+v", r, o)
	}
	// Both answer the same from here on.
	for _, step := range []struct {
		verb Command
		opt  Option
	}{{WONT, SuppressGA}, {WILL, SuppressGA}, {DO, Echo}, {WILL, Option(9)}, {DONT, Option(200)}} {
		a, ca := o.Receive(nil, step.verb, step.opt)
		b, cb := r.Receive(nil, step.verb, step.opt)
		if !bytes.Equal(a, b) || fmt.Sprint(ca) != fmt.Sprint(cb) {
			t.Fatalf("%v %v: original answers % x %v, restored % x %v", step.verb, step.opt, a, ca, b, cb)
		}
	}
}

func TestOptionsStateErrors(t *testing.T) {
	var o Options
	o.Enable(nil, Local, Binary)
	good := o.AppendState(nil)
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "0 bytes"},
		{"version", append([]byte{2}, good[1:]...), "version 2"},
		{"too many", append(append([]byte(nil), good[:65]...), 17), "17 options"},
		{"short entries", append(append([]byte(nil), good[:65]...), 2, 0, 3, 0), "need 6 bytes"},
		{"state out of range", append(append([]byte(nil), good[:65]...), 1, 0, 8, 0), "out of range"},
		{"both NO", append(append([]byte(nil), good[:65]...), 1, 0, 0, 0), "both sides NO"},
		{"twice", append(append([]byte(nil), good[:65]...), 2, 0, 1, 0, 0, 3, 0), "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := o
			_, err := r.ParseState(tc.in)
			if !errors.Is(err, ErrBadState) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("err %v, want ErrBadState saying %q", err, tc.want)
			}
			if r != o {
				t.Fatal("a failed parse changed the options")
			}
		})
	}
}

// FuzzOptionsState: ParseState never panics, and what it accepts writes
// back as the same bytes.
func FuzzOptionsState(f *testing.F) {
	var o Options
	o.Accept(Remote, Binary, true)
	o.Enable(nil, Local, Binary)
	o.Enable(nil, Remote, Option(232))
	f.Add(o.AppendState(nil))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, in []byte) {
		var r Options
		rest, err := r.ParseState(in)
		if err != nil {
			return
		}
		used := in[:len(in)-len(rest)]
		if again := r.AppendState(nil); !bytes.Equal(again, used) {
			t.Fatalf("re-encoded % x, parsed % x", again, used)
		}
	})
}
