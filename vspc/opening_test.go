package vspc_test

import (
	"bytes"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/telnet"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// esxiKS1 is KNOWN-SUBOPTIONS-1 as ESXi sends it (notes esxi-wire.md §4.1).
var esxiKS1 = []byte{0x00, 0x01, 0x02, 0x03, 0x28, 0x29, 0x2b, 0x2c, 0x2d, 0x2e, 0x30, 0x46, 0x47, 0x49, 0x50, 0x51, 0x54, 0x55, 0x56, 0x57, 0x52, 0x53}

// openingOffers is what the proxy offers first, as VMware's proxy does.
func openingOffers() []byte {
	return []byte{0xff, 0xfb, 0x00, 0xff, 0xfb, 0x03, 0xff, 0xfb, 0x01, 0xff, 0xfd, 0x00, 0xff, 0xfd, 0x03, 0xff, 0xfd, 0xe8}
}

// TestOpeningInOneWrite: when the VM speaks first, as ESXi does, the
// proxy's offers leave in the same write as its answers (one segment and
// one round trip fewer per VM than offering at accept).
func TestOpeningInOneWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipeEnv(t, nil)
		vmSide := e.conn()
		hello := telnet.AppendNegotiation(nil, telnet.WILL, telnet.Authentication)
		hello = telnet.AppendNegotiation(hello, telnet.WILL, telnet.VMwareExt)
		hello = vspc.AppendExt(hello, vspc.KnownSuboptions1, esxiKS1)
		hello = vspc.AppendExt(hello, vspc.DoProxy, []byte("C"), []byte("tcp://127.0.0.1:9"))
		if _, err := vmSide.Write(hello); err != nil {
			t.Fatal(err)
		}
		want := openingOffers()
		want = telnet.AppendNegotiation(want, telnet.DONT, telnet.Authentication)
		want = vspc.AppendKnownSuboptions2(want)
		want = vspc.AppendExt(want, vspc.GetVMVCUUID)
		want = vspc.AppendExt(want, vspc.GetVMName)
		want = vspc.AppendExt(want, vspc.GetVMBIOSUUID)
		want = vspc.AppendExt(want, vspc.GetVMLocationUUID)
		// net.Pipe hands one Write to one Read when the buffer is large
		// enough, and never joins two writes.
		buf := make([]byte, 4096)
		n, err := vmSide.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("first write from the proxy:\n % x\nwant (offers, DONT AUTHENTICATION, KNOWN-SUBOPTIONS-2 and the four GET-VM-* in one write):\n % x", buf[:n], want)
		}
	})
}

// TestOpeningSilentPeer: a peer that waits for the proxy to speak first
// still gets the offers, after the 20 ms the proxy waits for the VM to
// speak first (offerHold).
func TestOpeningSilentPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipeEnv(t, nil)
		start := time.Now()
		h := collect(e.conn())
		time.Sleep(20*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if got, _ := h.state(); len(got) != 0 {
			t.Fatalf("offers % x before the VM had 20 ms to speak first", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got, _ := h.state(); !bytes.Equal(got, openingOffers()) {
			t.Fatalf("offers % x at %v, want % x", got, time.Since(start), openingOffers())
		}
	})
}
