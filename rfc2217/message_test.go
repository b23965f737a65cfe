package rfc2217

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/telnet"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// payloadOf runs wire bytes through the telnet decoder and returns the one
// COM-PORT-OPTION subnegotiation payload they must contain.
func payloadOf(t testing.TB, wire []byte) []byte {
	t.Helper()
	var got [][]byte
	// Codec round trip: no SB length limit beyond the input's own size.
	d := telnet.Decoder{Binary: true, MaxSubnegotiation: len(wire) + 1}
	err := d.Decode(append([]byte(nil), wire...), func(ev telnet.Event) error {
		if ev.Kind != telnet.EventSubnegotiation || ev.Option != telnet.ComPort {
			return fmt.Errorf("unexpected event %v", ev.Kind)
		}
		got = append(got, append([]byte(nil), ev.Data...))
		return nil
	})
	if err != nil || len(got) != 1 {
		t.Fatalf("decode % x: %v (%d subnegotiations)", wire, err, len(got))
	}
	return got[0]
}

// messageVectors is every COM-PORT-OPTION message in both directions, as
// it goes on the wire. Server rows marked from a peer are replies observed
// in device-peers.md §1.1.
var messageVectors = []struct {
	name string
	msg  Message
	wire string // "% x"
}{
	// client → access server
	{"signature request", Message{Command: Signature}, "ff fa 2c 00 ff f0"},                                                      // IAC SB COM-PORT SIGNATURE IAC SE
	{"signature text", Message{Command: Signature, Text: "vspc"}, "ff fa 2c 00 76 73 70 63 ff f0"},                               // IAC SB COM-PORT SIGNATURE "vspc" IAC SE
	{"baud 115200", Message{Command: SetBaudrate, Baud: 115200}, "ff fa 2c 01 00 01 c2 00 ff f0"},                                // IAC SB COM-PORT SET-BAUDRATE 115200 IAC SE
	{"baud query", Message{Command: SetBaudrate}, "ff fa 2c 01 00 00 00 00 ff f0"},                                               // IAC SB COM-PORT SET-BAUDRATE 0 IAC SE
	{"baud 65535 doubles IAC", Message{Command: SetBaudrate, Baud: 0xffff}, "ff fa 2c 01 00 00 ff ff ff ff ff f0"},               // SET-BAUDRATE 00 00 IAC IAC IAC IAC
	{"baud all ones", Message{Command: SetBaudrate, Baud: 0xffffffff}, "ff fa 2c 01 ff ff ff ff ff ff ff ff ff f0"},              // SET-BAUDRATE 4 × IAC IAC
	{"datasize 7", Message{Command: SetDatasize, Value: 7}, "ff fa 2c 02 07 ff f0"},                                              // SET-DATASIZE 7
	{"datasize query", Message{Command: SetDatasize}, "ff fa 2c 02 00 ff f0"},                                                    // SET-DATASIZE 0
	{"parity even", Message{Command: SetParity, Value: uint8(ParityEven)}, "ff fa 2c 03 03 ff f0"},                               // SET-PARITY EVEN
	{"parity space", Message{Command: SetParity, Value: uint8(ParitySpace)}, "ff fa 2c 03 05 ff f0"},                             // SET-PARITY SPACE
	{"stopsize 2", Message{Command: SetStopsize, Value: uint8(Stop2)}, "ff fa 2c 04 02 ff f0"},                                   // SET-STOPSIZE 2
	{"stopsize 1.5", Message{Command: SetStopsize, Value: uint8(Stop15)}, "ff fa 2c 04 03 ff f0"},                                // SET-STOPSIZE 1.5
	{"control hardware flow", Message{Command: SetControl, Value: uint8(ControlFlowHardware)}, "ff fa 2c 05 03 ff f0"},           // SET-CONTROL FLOW-HARDWARE
	{"control break on", Message{Command: SetControl, Value: uint8(ControlBreakOn)}, "ff fa 2c 05 05 ff f0"},                     // SET-CONTROL BREAK-ON
	{"control DTR on", Message{Command: SetControl, Value: uint8(ControlDTROn)}, "ff fa 2c 05 08 ff f0"},                         // SET-CONTROL DTR-ON
	{"control RTS off", Message{Command: SetControl, Value: uint8(ControlRTSOff)}, "ff fa 2c 05 0c ff f0"},                       // SET-CONTROL RTS-OFF
	{"control DSR flow", Message{Command: SetControl, Value: uint8(ControlFlowDSR)}, "ff fa 2c 05 13 ff f0"},                     // SET-CONTROL FLOW-DSR
	{"notify linestate poll (pyserial)", Message{Command: NotifyLinestate, Poll: true}, "ff fa 2c 06 ff f0"},                     // NOTIFY-LINESTATE, no value
	{"notify modemstate poll (pyserial)", Message{Command: NotifyModemstate, Poll: true}, "ff fa 2c 07 ff f0"},                   // NOTIFY-MODEMSTATE, no value
	{"client suspend", Message{Command: FlowControlSuspend}, "ff fa 2c 08 ff f0"},                                                // FLOWCONTROL-SUSPEND
	{"client resume", Message{Command: FlowControlResume}, "ff fa 2c 09 ff f0"},                                                  // FLOWCONTROL-RESUME
	{"linestate mask 0", Message{Command: SetLinestateMask}, "ff fa 2c 0a 00 ff f0"},                                             // SET-LINESTATE-MASK 0
	{"modemstate mask 255", Message{Command: SetModemstateMask, Value: 0xff}, "ff fa 2c 0b ff ff ff f0"},                         // SET-MODEMSTATE-MASK IAC IAC
	{"purge both", Message{Command: PurgeData, Value: uint8(PurgeBoth)}, "ff fa 2c 0c 03 ff f0"},                                 // PURGE-DATA 3
	{"purge rx", Message{Command: PurgeData, Value: uint8(PurgeRX)}, "ff fa 2c 0c 01 ff f0"},                                     // PURGE-DATA 1
	{"server signature (ser2net)", Message{Command: Signature + 100, Text: "ser2net"}, "ff fa 2c 64 73 65 72 32 6e 65 74 ff f0"}, // SERVER-SIGNATURE "ser2net"
	{"server signature request", Message{Command: Signature + 100}, "ff fa 2c 64 ff f0"},                                         // SERVER-SIGNATURE, empty = asks ours
	{"server baud 9600", Message{Command: SetBaudrate + 100, Baud: 9600}, "ff fa 2c 65 00 00 25 80 ff f0"},                       // SERVER-SET-BAUDRATE 9600
	{"server baud 65535", Message{Command: SetBaudrate + 100, Baud: 0xffff}, "ff fa 2c 65 00 00 ff ff ff ff ff f0"},              // as ser2net and pyserial answer it
	{"server datasize 8", Message{Command: SetDatasize + 100, Value: 8}, "ff fa 2c 66 08 ff f0"},                                 // SERVER-SET-DATASIZE 8
	{"server parity none", Message{Command: SetParity + 100, Value: 1}, "ff fa 2c 67 01 ff f0"},                                  // SERVER-SET-PARITY NONE
	{"server stopsize 1", Message{Command: SetStopsize + 100, Value: 1}, "ff fa 2c 68 01 ff f0"},                                 // SERVER-SET-STOPSIZE 1
	{"server control flow none", Message{Command: SetControl + 100, Value: 1}, "ff fa 2c 69 01 ff f0"},                           // SERVER-SET-CONTROL FLOW-NONE
	{"server control RTS query answer", Message{Command: SetControl + 100, Value: 11}, "ff fa 2c 69 0b ff f0"},                   // SERVER-SET-CONTROL RTS-ON
	{"server linestate", Message{Command: NotifyLinestate + 100, Value: uint8(LineTSRE | LineTHRE)}, "ff fa 2c 6a 60 ff f0"},     // SERVER-NOTIFY-LINESTATE TSRE|THRE
	{"server modemstate (pyserial)", Message{Command: NotifyModemstate + 100, Value: 0xa1}, "ff fa 2c 6b a1 ff f0"},              // SERVER-NOTIFY-MODEMSTATE CD|DSR|ΔCTS
	{"server modemstate 0 (ser2net)", Message{Command: NotifyModemstate + 100}, "ff fa 2c 6b 00 ff f0"},                          // SERVER-NOTIFY-MODEMSTATE 0
	{"server modemstate all", Message{Command: NotifyModemstate + 100, Value: 0xff}, "ff fa 2c 6b ff ff ff f0"},                  // SERVER-NOTIFY-MODEMSTATE IAC IAC
	{"server suspend", Message{Command: FlowControlSuspend + 100}, "ff fa 2c 6c ff f0"},                                          // SERVER-FLOWCONTROL-SUSPEND
	{"server resume", Message{Command: FlowControlResume + 100}, "ff fa 2c 6d ff f0"},                                            // SERVER-FLOWCONTROL-RESUME
	{"server linestate mask", Message{Command: SetLinestateMask + 100, Value: 0x10}, "ff fa 2c 6e 10 ff f0"},                     // SERVER-SET-LINESTATE-MASK BREAK
	{"server modemstate mask", Message{Command: SetModemstateMask + 100, Value: 0xff}, "ff fa 2c 6f ff ff ff f0"},                // SERVER-SET-MODEMSTATE-MASK 255
	{"server purge both", Message{Command: PurgeData + 100, Value: 3}, "ff fa 2c 70 03 ff f0"},                                   // SERVER-PURGE-DATA 3
}

func TestMessageVectors(t *testing.T) {
	for _, tt := range messageVectors {
		t.Run(tt.name, func(t *testing.T) {
			wire := unhex(t, tt.wire)
			if got := AppendMessage(nil, tt.msg); !bytes.Equal(got, wire) {
				t.Errorf("AppendMessage(%v)\n got % x\nwant % x", tt.msg, got, wire)
			}
			// Append keeps what dst held.
			if got := AppendMessage([]byte{1, 2}, tt.msg); !bytes.Equal(got[2:], wire) || got[0] != 1 {
				t.Errorf("AppendMessage with prefix: % x", got)
			}
			m, err := Parse(payloadOf(t, wire))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(m, tt.msg) {
				t.Errorf("Parse\n got %#v\nwant %#v", m, tt.msg)
			}
			if m.String() == "" {
				t.Error("empty String")
			}
		})
	}
}

// Replies seen from real servers that are not canonical: Parse takes what
// it needs and counts the rest.
func TestParseLax(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    Message
	}{
		// sredird 2.2.1: SERVER-SET-BAUDRATE 38400 then 4 NULs
		{"sredird 8-byte baud", "65 00 00 96 00 00 00 00 00", Message{Command: SetBaudrate + 100, Baud: 38400, Extra: 4}},
		{"trailing byte after datasize", "66 08 00", Message{Command: SetDatasize + 100, Value: 8, Extra: 1}},
		{"suspend with a value", "08 01", Message{Command: FlowControlSuspend, Extra: 1}},
		{"signature keeps every byte", "00 ff 00 41", Message{Command: Signature, Text: "\xff\x00A"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(unhex(t, tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m, tt.want) {
				t.Errorf("got %#v\nwant %#v", m, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		is      error
		msg     string
	}{
		{"empty", "", ErrMalformed, "rfc2217: empty COM-PORT-OPTION subnegotiation"},
		// gensio would take this as a Cisco IOS baud index; we do not guess.
		{"one-byte baud", "01 0b", ErrMalformed, "rfc2217: SET-BAUDRATE value is 1 bytes, want 4"},
		{"three-byte server baud", "65 00 25 80", ErrMalformed, "rfc2217: SERVER-SET-BAUDRATE value is 3 bytes, want 4"},
		{"datasize without value", "02", ErrMalformed, "rfc2217: SET-DATASIZE value is 0 bytes, want 1"},
		{"server modemstate without value", "6b", ErrMalformed, "rfc2217: SERVER-NOTIFY-MODEMSTATE value is 0 bytes, want 1"},
		{"purge without value", "0c", ErrMalformed, "rfc2217: PURGE-DATA value is 0 bytes, want 1"},
		{"code 13", "0d 01", ErrUnknownCommand, "rfc2217: unknown command 13 (1 value bytes)"},
		{"code 99", "63", ErrUnknownCommand, "rfc2217: unknown command 99 (0 value bytes)"},
		{"code 113", "71 00", ErrUnknownCommand, "rfc2217: unknown command 113 (1 value bytes)"},
		{"code 255", "ff", ErrUnknownCommand, "rfc2217: unknown command 255 (0 value bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(unhex(t, tt.payload))
			if !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want %v", err, tt.is)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err %T is not *ParseError", err)
			}
			if err.Error() != tt.msg {
				t.Errorf("message %q, want %q", err, tt.msg)
			}
		})
	}
}

func TestCommandNames(t *testing.T) {
	for c, want := range map[Command]string{
		Signature: "SIGNATURE", SetBaudrate: "SET-BAUDRATE", PurgeData: "PURGE-DATA",
		SetBaudrate + 100: "SERVER-SET-BAUDRATE", NotifyModemstate + 100: "SERVER-NOTIFY-MODEMSTATE",
		13: "COMPORT-CMD(13)", 113: "COMPORT-CMD(113)",
	} {
		if c.String() != want {
			t.Errorf("%d: %q, want %q", byte(c), c.String(), want)
		}
	}
	if SetControl.Reply() != 105 || Command(105).Base() != SetControl || !Command(112).IsServer() || Command(12).IsServer() {
		t.Error("Reply/Base/IsServer")
	}
	if got := (ModemCD | ModemDSR | ModemDeltaCTS).String(); got != "CD|DSR|ΔCTS" {
		t.Errorf("ModemState.String = %q", got)
	}
	if got := (LineTSRE | LineTHRE).String(); got != "TSRE|THRE" {
		t.Errorf("LineState.String = %q", got)
	}
	if got := ControlDTROn.String(); got != "DTR-ON" {
		t.Errorf("Control.String = %q", got)
	}
	for _, tt := range []struct {
		s    Settings
		want string
	}{
		{Settings{Baud: 115200, DataSize: 8, Parity: ParityNone, StopSize: Stop1}, "115200 8N1"},
		{Settings{Baud: 9600, DataSize: 7, Parity: ParityEven, StopSize: Stop2, Flow: FlowHardware}, "9600 7E2 rts/cts"},
		{Settings{Baud: 300, DataSize: 5, Parity: ParityMark, StopSize: Stop15, Flow: FlowNone}, "300 5M1.5"},
		{Settings{Baud: 57600}, "57600 ???"},
	} {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.s, got, tt.want)
		}
	}
}

func FuzzRFC2217(f *testing.F) {
	for _, tt := range messageVectors {
		f.Add(AppendMessage(nil, tt.msg)[3 : len(AppendMessage(nil, tt.msg))-2]) // escaped payload; fine as a seed
		f.Add(tt.msg.AppendPayload(nil))
	}
	f.Add([]byte{0x65, 0, 0, 0x96, 0, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Add([]byte{0x0d})
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := Parse(payload)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "rfc2217: ") {
				t.Fatalf("error %T %q", err, err)
			}
			return
		}
		_ = m.String()
		enc := m.AppendPayload(nil)
		if m.Extra == 0 && !bytes.Equal(enc, payload) {
			t.Fatalf("payload % x re-encodes as % x", payload, enc)
		}
		if m.Extra > 0 && !bytes.Equal(enc, payload[:len(payload)-m.Extra]) {
			t.Fatalf("payload % x with %d extra re-encodes as % x", payload, m.Extra, enc)
		}
		m2, err := Parse(enc)
		m.Extra = 0
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %#v → % x → %#v, %v", m, enc, m2, err)
		}
		// On the wire and back through the telnet decoder.
		if got := payloadOf(t, AppendMessage(nil, m)); !bytes.Equal(got, enc) {
			t.Fatalf("wire round trip: % x, want % x", got, enc)
		}
	})
}
