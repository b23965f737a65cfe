package devices

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// configured8N1 is what a device server's port is configured to.
var configured8N1 = rfc2217.Settings{Baud: 115200, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone}

// TestFixedLineAnswers: the answer is the configured settings; a request
// differs only where the configured settings know the field; an unknown
// field is no mismatch and stays unset in the answer (the access server
// then takes the guest's value).
func TestFixedLineAnswers(t *testing.T) {
	tg, err := target.Parse("tcp://moxa:4001")
	if err != nil {
		t.Fatal(err)
	}
	baud9600 := rfc2217.Settings{Baud: 9600}
	for _, tt := range []struct {
		name       string
		configured rfc2217.Settings
		req        rfc2217.Settings
		mismatch   string // substring; "" = none
	}{
		{"same", configured8N1, configured8N1, ""},
		{"a query", configured8N1, rfc2217.Settings{}, ""},
		{"part of it", configured8N1, rfc2217.Settings{Baud: 115200}, ""},
		{"other baud", configured8N1, rfc2217.Settings{Baud: 9600}, "asked for 9600 8N1, line is fixed at 115200 8N1 (tcp devices cannot change line settings"},
		{"other stop bits", configured8N1, rfc2217.Settings{StopSize: rfc2217.Stop2}, "asked for 115200 8N2, line is fixed at 115200 8N1"},
		{"nothing configured", rfc2217.Settings{}, configured8N1, ""},
		{"unknown fields", baud9600, rfc2217.Settings{Baud: 9600, DataSize: 7, Parity: rfc2217.ParityEven}, ""},
		{"a known field", baud9600, rfc2217.Settings{Baud: 19200, DataSize: 7}, "asked for 19200 7??, line is fixed at 9600 ???"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFixedLine(tg, tt.configured, nil)
			got, err := f.SetSettings(t.Context(), tt.req)
			if err != nil || got != tt.configured {
				t.Errorf("SetSettings(%v) = %v, %v; want the configured %v", tt.req, got, err, tt.configured)
			}
			if m := f.Mismatch(); tt.mismatch == "" && m != "" || !strings.Contains(m, tt.mismatch) {
				t.Errorf("Mismatch() = %q, want %q", m, tt.mismatch)
			}
		})
	}
}

// TestFixedLineAcrossOpens: one FixedLine passed to every Open of a
// device (what a bridge link does) keeps what the guest asked in vain
// across a reconnect, answers the same with no device open, and warns
// once, not once per connection.
func TestFixedLineAcrossOpens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	tg := mustParse(t, "tcp://"+ln.Addr().String())
	rec := &logRecorder{}
	line := NewFixedLine(tg, configured8N1, slog.New(rec))
	ctx := t.Context()
	ask := rfc2217.Settings{Baud: 9600}
	for i := range 2 {
		dev, err := Open(ctx, tg, Options{Line: line, Initial: rfc2217.Settings{Baud: 300}})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := dev.SetSettings(ctx, ask); err != nil || got != configured8N1 {
			t.Fatalf("open %d: SetSettings = %v, %v; want the line's %v, not Initial", i, got, err, configured8N1)
		}
		if m := dev.(interface{ Mismatch() string }).Mismatch(); m != line.Mismatch() || m == "" {
			t.Fatalf("open %d: the device's mismatch %q is not the line's %q", i, m, line.Mismatch())
		}
		if err := dev.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// No device open: the same answer and the same record.
	before := line.Mismatch()
	if got, err := line.SetSettings(ctx, ask); err != nil || got != configured8N1 || line.Mismatch() != before {
		t.Fatalf("with no device: %v, %v, %q; want %v and %q", got, err, line.Mismatch(), configured8N1, before)
	}
	if n := rec.count(slog.LevelWarn, "devices: line settings mismatch"); n != 1 {
		t.Errorf("mismatch warned %d times over two connections, want once", n)
	}
	if !errors.Is(line.SetDTR(ctx, true), rfc2217.ErrNotSupported) {
		t.Error("SetDTR on a fixed line did not report ErrNotSupported")
	}
}
