package rfc2217_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/rfc2217/rfc2217test"
)

// handleStep is one client subnegotiation and what the access server must
// do with it: the reply on the wire, the port calls, an error or not.
type handleStep struct {
	name    string
	payload string // client payload after IAC SB 44, hex
	reply   string // full reply on the wire, hex; "" = none
	calls   string // port calls, joined by "; "
	err     string // substring of the error; "" = none
}

func runSteps(t *testing.T, s *rfc2217.AccessServer, port *rfc2217test.MemPort, steps []handleStep) {
	t.Helper()
	for _, st := range steps {
		reply, err := s.Handle(context.Background(), unhex(t, st.payload), port)
		if got := fmt.Sprintf("% x", reply); got != st.reply {
			t.Errorf("%s: reply\n got %s\nwant %s", st.name, got, st.reply)
		}
		if got := strings.Join(port.Calls(), "; "); got != st.calls {
			t.Errorf("%s: port calls %q, want %q", st.name, got, st.calls)
		}
		switch {
		case st.err == "" && err != nil:
			t.Errorf("%s: unexpected error %v", st.name, err)
		case st.err != "" && (err == nil || !strings.Contains(err.Error(), st.err)):
			t.Errorf("%s: error %v, want %q", st.name, err, st.err)
		case err != nil && !strings.HasPrefix(err.Error(), "rfc2217: "):
			t.Errorf("%s: error %q lacks the package prefix", st.name, err)
		}
	}
}

func TestAccessServerHandle(t *testing.T) {
	port := rfc2217test.NewMemPort(rfc2217.Settings{Baud: 9600, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone})
	s := rfc2217.NewAccessServer("vspc-test")
	runSteps(t, s, port, []handleStep{
		// SIGNATURE "" → SERVER-SIGNATURE "vspc-test"
		{"signature request", "00", "ff fa 2c 64 76 73 70 63 2d 74 65 73 74 ff f0", "", ""},
		{"client signature: no reply", "00 45 53 58 69", "", "", ""},
		// SET-BAUDRATE 0 (query) → SERVER-SET-BAUDRATE 9600
		{"baud query", "01 00 00 00 00", "ff fa 2c 65 00 00 25 80 ff f0", "", ""},
		// SET-BAUDRATE 57600 → the port, SERVER-SET-BAUDRATE 57600
		{"baud 57600", "01 00 00 e1 00", "ff fa 2c 65 00 00 e1 00 ff f0", "SetSettings 57600 ???", ""},
		{"same baud again: port untouched", "01 00 00 e1 00", "ff fa 2c 65 00 00 e1 00 ff f0", "", ""},
		// SET-BAUDRATE 65535: 0xFF doubled in the reply
		{"baud 65535", "01 00 00 ff ff", "ff fa 2c 65 00 00 ff ff ff ff ff f0", "SetSettings 65535 ???", ""},
		{"datasize 7", "02 07", "ff fa 2c 66 07 ff f0", "SetSettings ? 7??", ""},
		{"datasize query", "02 00", "ff fa 2c 66 07 ff f0", "", ""},
		{"datasize 9 rejected, answered with 7", "02 09", "ff fa 2c 66 07 ff f0", "", "data size 9"},
		{"parity even", "03 03", "ff fa 2c 67 03 ff f0", "SetSettings ? ?E?", ""},
		{"parity 6 rejected", "03 06", "ff fa 2c 67 03 ff f0", "", "parity 6"},
		{"stopsize 2", "04 02", "ff fa 2c 68 02 ff f0", "SetSettings ? ??2", ""},
		{"stopsize query", "04 00", "ff fa 2c 68 02 ff f0", "", ""},
		// SET-CONTROL
		{"flow query", "05 00", "ff fa 2c 69 01 ff f0", "", ""},
		{"flow hardware", "05 03", "ff fa 2c 69 03 ff f0", "SetSettings ? ??? rts/cts", ""},
		{"inbound flow query follows", "05 0d", "ff fa 2c 69 10 ff f0", "", ""},
		{"inbound xon/xoff sets the one knob", "05 0f", "ff fa 2c 69 0f ff f0", "SetSettings ? ??? xon/xoff", ""},
		{"break query", "05 04", "ff fa 2c 69 06 ff f0", "", ""},
		{"break on", "05 05", "ff fa 2c 69 05 ff f0", "SetBreak true", ""},
		{"break off", "05 06", "ff fa 2c 69 06 ff f0", "SetBreak false", ""},
		{"DTR query (on after open)", "05 07", "ff fa 2c 69 08 ff f0", "", ""},
		{"DTR off", "05 09", "ff fa 2c 69 09 ff f0", "SetDTR false", ""},
		{"RTS off", "05 0c", "ff fa 2c 69 0c ff f0", "SetRTS false", ""},
		{"RTS query", "05 0a", "ff fa 2c 69 0c ff f0", "", ""},
		{"DCD flow unsupported", "05 11", "ff fa 2c 69 02 ff f0", "", "not supported"},
		{"DTR inbound flow unsupported", "05 12", "ff fa 2c 69 0f ff f0", "", "not supported"},
		{"unassigned control value", "05 63", "ff fa 2c 69 02 ff f0", "", "not supported"},
		// masks: acknowledged with the mask
		{"linestate mask", "0a 10", "ff fa 2c 6e 10 ff f0", "", ""},
		{"modemstate mask 255", "0b ff", "ff fa 2c 6f ff ff ff f0", "", ""},
		// pyserial's poll: SERVER-NOTIFY-MODEMSTATE with the port's lines (DTR, RTS off → no DSR/CTS)
		{"modem poll", "07", "ff fa 2c 6b 80 ff f0", "", ""},
		{"linestate poll", "06", "ff fa 2c 6a 00 ff f0", "", ""},
		{"purge rx", "0c 01", "ff fa 2c 70 01 ff f0", "Purge rx", ""},
		{"purge 4 rejected", "0c 04", "", "", "purge 4"},
		{"suspend: no reply", "08", "", "", ""},
		{"server code from client", "65 00 00 25 80", "", "", "server command"},
		{"unknown code", "0d", "", "", "unknown command 13"},
		{"empty", "", "", "", "empty"},
	})
	if !s.Suspended() {
		t.Error("not suspended after FLOWCONTROL-SUSPEND")
	}
	runSteps(t, s, port, []handleStep{{"resume", "09", "", "", ""}})
	if s.Suspended() {
		t.Error("suspended after FLOWCONTROL-RESUME")
	}
	st := s.State()
	if st.Settings.String() != "65535 7E2 xon/xoff" || st.DTR || st.RTS || st.ClientSignature != "ESXi" {
		t.Errorf("state %+v", st)
	}
}

// A port that cannot do modem lines (a pty): the client still gets an
// answer, with the state still in effect, and the error says why.
func TestAccessServerPortErrors(t *testing.T) {
	port := rfc2217test.NewMemPort(rfc2217.Settings{Baud: 9600})
	port.NoModem = true
	s := rfc2217.NewAccessServer("")
	runSteps(t, s, port, []handleStep{
		{"DTR off on a pty", "05 09", "ff fa 2c 69 08 ff f0", "SetDTR false", "not supported"},
		{"modem poll on a pty", "07", "ff fa 2c 6b 00 ff f0", "", ""},
		{"signature default", "00", "ff fa 2c 64 76 73 70 63 2d 62 72 69 64 67 65 ff f0", "", ""},
	})
	reply, err := s.Handle(context.Background(), []byte{5, 9}, port)
	if !errors.Is(err, rfc2217.ErrNotSupported) || reply == nil {
		t.Errorf("errors.Is(ErrNotSupported) = false: %v", err)
	}
}

// An NPort in TCP-server mode: settings are fixed by its console; the
// client is told the truth.
func TestAccessServerFixedPort(t *testing.T) {
	port := rfc2217test.NewMemPort(rfc2217.Settings{Baud: 115200, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1})
	port.Fixed = port.Current()
	s := rfc2217.NewAccessServer("")
	runSteps(t, s, port, []handleStep{
		// SET-BAUDRATE 9600 → SERVER-SET-BAUDRATE 115200
		{"baud 9600 refused", "01 00 00 25 80", "ff fa 2c 65 00 01 c2 00 ff f0", "SetSettings 9600 ???", ""},
		{"parity even refused", "03 03", "ff fa 2c 67 01 ff f0", "SetSettings ? ?E?", ""},
	})
}

func TestAccessServerNotify(t *testing.T) {
	s := rfc2217.NewAccessServer("")
	steps := []struct {
		name  string
		line  rfc2217.LineState
		modem rfc2217.ModemState
		want  string
	}{
		// First report: modem state always (RFC default mask 255), line state masked out (default 0).
		{"first", rfc2217.LineTHRE, rfc2217.ModemCD | rfc2217.ModemDSR | rfc2217.ModemCTS, "ff fa 2c 6b b0 ff f0"},
		{"unchanged", rfc2217.LineTHRE, rfc2217.ModemCD | rfc2217.ModemDSR | rfc2217.ModemCTS, ""},
		// CTS drops: CD|DSR|ΔCTS
		{"CTS drops", 0, rfc2217.ModemCD | rfc2217.ModemDSR, "ff fa 2c 6b a1 ff f0"},
		// RI rises then falls: RI, then TERI
		{"RI on", 0, rfc2217.ModemCD | rfc2217.ModemDSR | rfc2217.ModemRI, "ff fa 2c 6b e0 ff f0"},
		{"RI off", 0, rfc2217.ModemCD | rfc2217.ModemDSR, "ff fa 2c 6b a4 ff f0"},
		// carrier lost: ΔCD, DSR stays
		{"CD lost", 0, rfc2217.ModemDSR, "ff fa 2c 6b 28 ff f0"},
	}
	for _, st := range steps {
		if got := fmt.Sprintf("% x", s.Notify(nil, st.line, st.modem)); got != st.want {
			t.Errorf("%s: % s, want %s", st.name, got, st.want)
		}
	}
	// Client masks: line BREAK only; modem CD only.
	ctx := context.Background()
	port := rfc2217test.NewMemPort(rfc2217.Settings{})
	if _, err := s.Handle(ctx, []byte{10, byte(rfc2217.LineBreak)}, port); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Handle(ctx, []byte{11, byte(rfc2217.ModemCD | rfc2217.ModemDeltaCD)}, port); err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct {
		name  string
		line  rfc2217.LineState
		modem rfc2217.ModemState
		want  string
	}{
		{"CTS change masked out", 0, rfc2217.ModemDSR | rfc2217.ModemCTS, ""},
		{"overrun masked out", rfc2217.LineOverrun, rfc2217.ModemDSR | rfc2217.ModemCTS, ""},
		// NOTIFY-LINESTATE BREAK; NOTIFY-MODEMSTATE CD|ΔCD
		{"break and carrier", rfc2217.LineBreak, rfc2217.ModemCD | rfc2217.ModemDSR, "ff fa 2c 6a 10 ff f0 ff fa 2c 6b 88 ff f0"},
		{"break persists", rfc2217.LineBreak, rfc2217.ModemCD | rfc2217.ModemDSR, ""},
	} {
		if got := fmt.Sprintf("% x", s.Notify(nil, st.line, st.modem)); got != st.want {
			t.Errorf("%s: % s, want %s", st.name, got, st.want)
		}
	}
}

func FuzzAccessServer(f *testing.F) {
	for _, p := range []string{"00", "01 00 00 25 80", "02 07", "03 03", "04 03", "05 08", "05 0f", "07", "0a ff", "0b 00", "0c 03", "08", "09", "65 00"} {
		f.Add(unhex(f, p))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		port := rfc2217test.NewMemPort(rfc2217.Settings{Baud: 9600})
		s := rfc2217.NewAccessServer("")
		reply, err := s.Handle(context.Background(), payload, port)
		if err != nil && !strings.HasPrefix(err.Error(), "rfc2217: ") {
			t.Fatalf("error without prefix: %v", err)
		}
		if len(reply) == 0 {
			return
		}
		// The reply is exactly one well-formed server message.
		m, perr := rfc2217.Parse(payloadOf(t, reply))
		if perr != nil || !m.Command.IsServer() || m.Extra != 0 {
			t.Fatalf("reply % x: %v %v", reply, m, perr)
		}
		if m.Command.Base() != rfc2217.Command(payload[0]) {
			t.Fatalf("reply %v to %v", m.Command, rfc2217.Command(payload[0]))
		}
	})
}
