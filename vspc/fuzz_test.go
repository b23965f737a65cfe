package vspc_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/telnet"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// FuzzExt232 checks the option-232 parsers never panic and that what we
// encode decodes back to the same message. It is seeded with every message
// of the seed's tables (the .vectors file TestSeedTableVectors reads).
func FuzzExt232(f *testing.F) {
	for _, v := range seedVectors(f) {
		if v.subopt >= 0 {
			f.Add(append([]byte{byte(v.subopt)}, v.payload...))
		}
	}
	f.Add([]byte{0x46, 'C'}) // DO-PROXY without a service URI
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := vspc.ParseExt(payload)
		if err != nil {
			if len(payload) != 0 {
				t.Fatalf("non-empty payload rejected: %v", err)
			}
			return
		}
		if m.Cmd == vspc.DoProxy {
			if req, err := vspc.ParseDoProxy(m.Payload); err == nil {
				if req.Direction != vspc.DirClient && req.Direction != vspc.DirServer || req.ServiceURI == "" {
					t.Fatalf("accepted bad DO-PROXY %+v", req)
				}
			}
		}
		wire := vspc.AppendExt(nil, m.Cmd, m.Payload)
		// The codec round trip, whatever the size (the session's limit on
		// SB length is tested elsewhere).
		d := telnet.Decoder{Binary: true, MaxSubnegotiation: len(payload) + 1}
		n := 0
		err = d.Decode(wire, func(ev telnet.Event) error {
			n++
			if ev.Kind != telnet.EventSubnegotiation || ev.Option != telnet.VMwareExt || !bytes.Equal(ev.Data, payload) {
				t.Fatalf("round trip: %+v", ev)
			}
			return nil
		})
		if err != nil || n != 1 {
			t.Fatalf("round trip: %v, %d events", err, n)
		}
	})
}

// FuzzServerConn feeds arbitrary bytes to a server connection: it must
// never panic and must end when the peer goes away.
func FuzzServerConn(f *testing.F) {
	f.Add([]byte{0xff, 0xfb, 0x25, 0xff, 0xfb, 0xe8, 0xff, 0xfa, 0xe8, 0x46, 'C', 't', 'c', 'p', ':', '/', '/', 'x', 0xff, 0xf0})
	f.Add([]byte{0xff, 0xfa, 0xe8, 0x2c, 1, 2, 3, 4, 0xff, 0xf0, 0xff, 0xfa, 0xe8, 0x28, 1, 0xff, 0xf0})
	f.Add([]byte{0xff, 0xfa, 0xe8})
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := vspc.NewServer(vspc.Config{Bridger: &recBridger{}, HandshakeTimeout: time.Second, IdentifyTimeout: 50 * time.Millisecond, MaxSubnegotiation: 128})
		defer srv.Close()
		a, b := net.Pipe()
		done := make(chan struct{})
		go func() { defer close(done); srv.ServeConn(b) }()
		go func() { // drain replies
			buf := make([]byte, 512)
			for {
				if _, err := a.Read(buf); err != nil {
					return
				}
			}
		}()
		a.SetWriteDeadline(time.Now().Add(time.Second))
		a.Write(in)
		a.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server connection did not end after the peer closed")
		}
	})
}
