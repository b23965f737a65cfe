package bridge_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// An idle device connection parks (no goroutine), wakes for data from the
// device, for a hang-up (the link reconnects with backoff and parks the
// new connection), and for the port closing, which ends its pump.
func TestDeviceConnectionParks(t *testing.T) {
	pk, err := park.New(park.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pk.Close() }) // after start's cleanup closed the bridge
	addr, _, br := start(t, `
[vspc]
listen = "127.0.0.1:0"
park_after = "30ms"
[policy]
connect_allow = ["127.0.0.0/8"]
reconnect_min = "20ms"
reconnect_max = "200ms"
`)
	br.SetParker(pk)
	c, remote, ln := dialRemote(t, addr, "park-1")
	parked := func(what string) {
		t.Helper()
		testwait.For(t, what, func() bool { return pk.Parked() == 1 })
	}
	parked("the device connection to park")
	for _, line := range []string{"first line\r\n", "second line\r\n"} {
		remote.Write([]byte(line))
		if got := string(readFull(t, c, len(line))); got != line {
			t.Fatalf("VM got %q, want %q", got, line)
		}
		parked("the device connection to park again")
	}
	c.Write([]byte("typed"))
	remote.SetReadDeadline(time.Now().Add(testwait.Timeout))
	if got := string(readFull(t, remote, 5)); got != "typed" {
		t.Fatalf("device got %q", got)
	}
	// The device goes away while parked: the hang-up wakes the pump and
	// the link reconnects.
	parked("the device connection to park before its hang-up")
	remote.Close()
	r2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	parked("the new device connection to park")
	r2.Write([]byte("back\r\n"))
	if got := string(readFull(t, c, 6)); !strings.HasPrefix(got, "back") {
		t.Fatalf("VM got %q after the reconnect", got)
	}
	waitState(t, br, "park-1", "up")
}
