package rfc2217_test

import (
	"encoding/hex"
	"fmt"
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
