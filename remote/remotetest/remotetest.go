// Package remotetest helps the tests of remote access: those of package
// remote and those of the doors that attach to its hub from outside it
// (the web console). It connects simulated VMs, waits for the hub's
// consoles and their clients, and reads what reaches a VM.
package remotetest

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// VM connects a simulated ESXi host to the VM listener at addr for a
// serial port of VM name (uuid is its VC, BIOS and location UUID) with
// service URI service, in direction dir. The connection closes when the
// test ends.
func VM(t testing.TB, addr, name, uuid, service string, dir vspc.Direction) *vspctest.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := vspctest.Dial(ctx, addr, vspctest.VM{Name: name, VCUUID: uuid, BIOSUUID: uuid, LocUUID: uuid, Direction: dir, ServiceURI: service})
	if err != nil {
		t.Fatalf("VM %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Console waits for hub's console of the VM named name and returns its
// info.
func Console(t testing.TB, hub *remote.Hub, name string) remote.ConsoleInfo {
	t.Helper()
	var got remote.ConsoleInfo
	testwait.For(t, "the console of VM "+name, func() bool {
		for _, ci := range hub.Consoles() {
			if ci.VMName == name {
				got = ci
				return true
			}
		}
		return false
	})
	return got
}

// WaitClients waits until the console of the VM named name has n clients.
func WaitClients(t testing.TB, hub *remote.Hub, name string, n int) remote.ConsoleInfo {
	t.Helper()
	var ci remote.ConsoleInfo
	if !testwait.Until(t, testwait.Timeout, func() bool {
		ci = Console(t, hub, name)
		return len(ci.Clients) == n
	}) {
		t.Fatalf("console %s: %d clients, want %d: %+v", name, len(ci.Clients), n, ci.Clients)
	}
	return ci
}

// ReadVM reads from vm (a VM, or a remote system) until it has got as
// many bytes as want, or times out, and fails unless they are want.
func ReadVM(t testing.TB, vm io.Reader, want []byte) {
	t.Helper()
	var mu sync.Mutex // guards got: the reader may go on after a timeout
	got := make([]byte, 0, len(want))
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			mu.Lock()
			full := len(got) >= len(want)
			mu.Unlock()
			if full {
				done <- nil
				return
			}
			n, err := vm.Read(buf)
			mu.Lock()
			got = append(got, buf[:n]...)
			mu.Unlock()
			if err != nil {
				done <- err
				return
			}
		}
	}()
	var err error
	timedOut := false
	select {
	case err = <-done:
	case <-time.After(testwait.Timeout):
		timedOut = true
	}
	mu.Lock()
	defer mu.Unlock()
	switch {
	case timedOut:
		t.Fatalf("VM got %d bytes, want %d: %q", len(got), len(want), Tail(got))
	case err != nil:
		t.Fatalf("VM read: %v after %q", err, got)
	case !bytes.Equal(got, want):
		t.Fatalf("VM got %q, want %q", Tail(got), Tail(want))
	}
}

// Tail is the last 200 bytes of b, for failure messages.
func Tail(b []byte) []byte {
	if len(b) > 200 {
		return b[len(b)-200:]
	}
	return b
}
