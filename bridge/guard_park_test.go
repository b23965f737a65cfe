package bridge_test

import (
	"context"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

type okGuard struct{}

func (okGuard) Acquire(context.Context, string, string) (<-chan struct{}, func(), error) {
	return make(chan struct{}), func() {}, nil
}
func (okGuard) Valid() bool           { return true }
func (okGuard) Forget(string, string) {}

// A claimed device parks and wakes like any other (the claim's wrapper
// does not hide the connection from the parker).
func TestGuardedDeviceParks(t *testing.T) {
	pk, err := park.New(park.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pk.Close() })
	addr, _, br := start(t, `
[vspc]
listen = "127.0.0.1:0"
park_after = "30ms"
[policy]
connect_allow = ["127.0.0.0/8"]
`)
	br.SetParker(pk)
	br.SetDeviceGuard(okGuard{})
	c, remote, _ := dialRemote(t, addr, "park-g")
	for i := range 5 {
		testwait.For(t, "the device connection to park", func() bool { return pk.Parked() >= 1 })
		line := []byte{'l', 'i', 'n', 'e', byte('0' + i), '\r', '\n'}
		remote.Write(line)
		if got := string(readFull(t, c, len(line))); got != string(line) {
			t.Fatalf("VM got %q, want %q", got, line)
		}
		c.Write([]byte("typed"))
		if got := string(readFull(t, remote, 5)); got != "typed" {
			t.Fatalf("device got %q", got)
		}
	}
}
