package rfc2217_test

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// benchServer is the far end of a Client's connection for benchmarks: it
// agrees to BINARY, SGA and COM-PORT-OPTION, decodes (and drops) what the
// client sends, and, when send is set, streams that chunk, escaped, to the
// client until the connection closes.
func benchServer(b *testing.B, conn net.Conn, send []byte) {
	var wg sync.WaitGroup
	var wmu sync.Mutex
	write := func(p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := conn.Write(p)
		return err
	}
	wg.Go(func() {
		var neg telnet.Options
		for _, opt := range []telnet.Option{telnet.Binary, telnet.SuppressGA, telnet.ComPort} {
			neg.Accept(telnet.Local, opt, true)
			neg.Accept(telnet.Remote, opt, true)
		}
		d := telnet.Decoder{Binary: true}
		buf := make([]byte, 32<<10)
		var out []byte
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			out = out[:0]
			d.Decode(buf[:n], func(ev telnet.Event) error {
				if ev.Kind == telnet.EventNegotiation {
					out, _ = neg.Receive(out, ev.Command, ev.Option)
				}
				return nil
			})
			if len(out) > 0 {
				reply := append([]byte(nil), out...)
				wg.Go(func() { write(reply) }) // net.Pipe: never block the reader on a write
			}
		}
	})
	if send != nil {
		wire := telnet.AppendData(nil, send)
		wg.Go(func() {
			for write(wire) == nil {
			}
		})
	}
	b.Cleanup(func() { conn.Close(); wg.Wait() })
}

func benchClient(b *testing.B, send []byte) *rfc2217.Client {
	cconn, sconn := net.Pipe()
	benchServer(b, sconn, send)
	c, err := rfc2217.NewClient(b.Context(), cconn, rfc2217.ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkClientWrite: data to the device, 4 KiB per Write.
func BenchmarkClientWrite(b *testing.B) {
	c := benchClient(b, nil)
	p := make([]byte, 4<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientRead: data from the device, read 4 KiB at a time.
func BenchmarkClientRead(b *testing.B) {
	c := benchClient(b, make([]byte, 4<<10))
	p := make([]byte, 4<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := io.ReadFull(c, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientDuplex: both at once, 4 KiB each way per iteration.
func BenchmarkClientDuplex(b *testing.B) {
	c := benchClient(b, make([]byte, 4<<10))
	p, q := make([]byte, 4<<10), make([]byte, 4<<10)
	var wg sync.WaitGroup
	n := b.N
	b.SetBytes(2 * int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	wg.Go(func() {
		for range n {
			if _, err := c.Write(p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for range n {
		if _, err := io.ReadFull(c, q); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
}
