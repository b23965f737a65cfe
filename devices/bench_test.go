package devices

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// silentServer accepts connections on 127.0.0.1 and hands each to serve
// on a goroutine of its own; it is closed, and its goroutines waited for,
// when the benchmark ends.
func silentServer(b *testing.B, serve func(net.Conn)) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { defer c.Close(); serve(c) })
		}
	})
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// BenchmarkOpenToFirstByte: from Open to the device server receiving the
// VM's first byte, against device servers that never answer a command —
// an RFC 2217 server that negotiates but acknowledges nothing (as VMware's
// serial_diagnostics.py), and an NPort whose command port accepts and
// answers nothing. Data never waits for control: ns/op is the connect
// and one round of negotiation, not the command timeouts (1 s and 2 s).
func BenchmarkOpenToFirstByte(b *testing.B) {
	initial := rfc2217.Settings{Baud: 115200, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone}
	got := make(chan byte, 1)
	b.Run("rfc2217-no-acks", func(b *testing.B) {
		addr := silentServer(b, func(c net.Conn) {
			var opts telnet.Options
			opts.Accept(telnet.Local, telnet.ComPort, true)
			opts.Accept(telnet.Local, telnet.Binary, true)
			opts.Accept(telnet.Remote, telnet.Binary, true)
			opts.Accept(telnet.Local, telnet.SuppressGA, true)
			opts.Accept(telnet.Remote, telnet.SuppressGA, true)
			opts.Accept(telnet.Remote, telnet.ComPort, true)
			var dec telnet.Decoder
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				var out []byte
				dec.Decode(buf[:n], func(ev telnet.Event) error {
					switch ev.Kind {
					case telnet.EventNegotiation:
						out, _ = opts.Receive(out, ev.Command, ev.Option)
					case telnet.EventData:
						select {
						case got <- ev.Data[0]:
						default:
						}
					}
					return nil // subnegotiations: never answered
				})
				if len(out) > 0 {
					c.Write(out)
				}
			}
		})
		tg, err := target.Parse("rfc2217://" + addr)
		if err != nil {
			b.Fatal(err)
		}
		openToFirstByte(b, tg, Options{Initial: initial}, got)
	})
	b.Run("nport-silent-command-port", func(b *testing.B) {
		drain := func(c net.Conn) { io.Copy(io.Discard, c) }
		cmd := silentServer(b, drain)
		data := silentServer(b, func(c net.Conn) {
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					select {
					case got <- buf[0]:
					default:
					}
				}
				if err != nil {
					return
				}
			}
		})
		_, cmdPort, _ := net.SplitHostPort(cmd)
		tg, err := target.Parse("nport://" + data + "?cmd=" + cmdPort)
		if err != nil {
			b.Fatal(err)
		}
		if p, _ := strconv.Atoi(cmdPort); tg.CmdPort != p {
			b.Fatalf("command port %d", tg.CmdPort)
		}
		openToFirstByte(b, tg, Options{Initial: initial}, got)
	})
}

func openToFirstByte(b *testing.B, tg target.Target, opts Options, got <-chan byte) {
	b.Helper()
	ctx := context.Background()
	for b.Loop() {
		dev, err := Open(ctx, tg, opts)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := dev.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		if c := <-got; c != 'x' {
			b.Fatalf("got %q", c)
		}
		b.StopTimer()
		dev.Close()
		b.StartTimer()
	}
}
