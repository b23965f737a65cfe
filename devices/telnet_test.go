package devices

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// telnetRemote is a tiny telnet server on 127.0.0.1 written for this
// test: it greets with option requests and escaped data, echoes what it
// receives as NVT text with protocol noise mixed in, and records the
// negotiations it receives.
type telnetRemote struct {
	ln net.Listener
	wg sync.WaitGroup

	mu   sync.Mutex
	negs []string // guarded by mu: "WONT ECHO", ...
	got  []byte   // guarded by mu: data received, decoded
	errs []error  // guarded by mu
}

// IAC DO ECHO, IAC WILL SGA, IAC WILL BINARY, IAC DO BINARY, IAC DO 44,
// IAC SB TERMINAL-TYPE SEND IAC SE, IAC NOP.
var telnetGreetingProtocol = []byte{
	255, 253, 1, 255, 251, 3, 255, 251, 0, 255, 253, 0, 255, 253, 44,
	255, 250, 24, 1, 255, 240, 255, 241,
}

var telnetGreetingData = []byte("hello\xff\r\n\r\x00\x00world\xff\xff\r")

func startTelnetRemote(t *testing.T) *telnetRemote {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &telnetRemote{ln: ln}
	t.Cleanup(func() {
		ln.Close()
		r.wg.Wait()
	})
	r.wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r.serve(c)
	})
	return r
}

func (r *telnetRemote) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *telnetRemote) serve(c net.Conn) {
	// Greeting: protocol one byte per write (IAC at every boundary), then
	// the data, escaped, in two pieces split inside "IAC IAC".
	for _, b := range telnetGreetingProtocol {
		if _, err := c.Write([]byte{b}); err != nil {
			r.fail(err)
			return
		}
	}
	g := telnet.AppendText(nil, telnetGreetingData)
	i := bytes.IndexByte(g, 0xFF) + 1
	for _, part := range [][]byte{g[:i], g[i:]} {
		if _, err := c.Write(part); err != nil {
			r.fail(err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	var dec telnet.Decoder
	buf := make([]byte, 4096)
	var out []byte
	n := 0
	for {
		k, err := c.Read(buf)
		out = out[:0]
		derr := dec.Decode(buf[:k], func(ev telnet.Event) error {
			switch ev.Kind {
			case telnet.EventNegotiation:
				r.mu.Lock()
				r.negs = append(r.negs, fmt.Sprintf("%v %v", ev.Command, ev.Option))
				r.mu.Unlock()
			case telnet.EventData:
				r.mu.Lock()
				r.got = append(r.got, ev.Data...)
				r.mu.Unlock()
				// Echo with noise: NOP, a repeated WILL SGA, an SB.
				for len(ev.Data) > 0 {
					m := min(len(ev.Data), 777)
					out = telnet.AppendText(out, ev.Data[:m])
					ev.Data = ev.Data[m:]
					switch n++; n % 3 {
					case 0:
						out = telnet.AppendCommand(out, telnet.NOP)
					case 1:
						out = telnet.AppendNegotiation(out, telnet.WILL, telnet.SuppressGA)
					case 2:
						out = telnet.AppendSubnegotiation(out, telnet.TerminalType, []byte{1, 0xFF})
					}
				}
			default:
				return fmt.Errorf("remote got unexpected %v from the device", ev.Kind)
			}
			return nil
		})
		if derr != nil {
			r.fail(derr)
			return
		}
		if len(out) > 0 {
			if _, werr := c.Write(out); werr != nil {
				r.fail(werr)
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				r.fail(err)
			}
			return
		}
	}
}

func (r *telnetRemote) snapshot() (negs []string, got []byte, errs []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.negs...), append([]byte(nil), r.got...), append([]error(nil), r.errs...)
}

func TestTelnetRemote(t *testing.T) {
	remote := startTelnetRemote(t)
	dev, err := Open(t.Context(), mustParse(t, "telnet://"+remote.ln.Addr().String()), Options{Logger: devicetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()

	// The greeting's data arrives exactly; none of its protocol does.
	got := make([]byte, len(telnetGreetingData))
	if _, err := io.ReadFull(dev, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, telnetGreetingData) {
		t.Fatalf("greeting data\n got % x\nwant % x", got, telnetGreetingData)
	}

	// 256 KiB of awkward bytes through the echo: what the remote decodes
	// and what comes back are both exactly what we sent.
	p := payload(256<<10, 7)
	errc := make(chan error, 1)
	go func() {
		_, err := dev.Write(p)
		errc <- err
	}()
	h := sha256.New()
	if _, err := io.CopyN(h, dev, int64(len(p))); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(p); !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Errorf("echoed data differs from what was sent")
	}
	negs, rgot, errs := remote.snapshot()
	for _, err := range errs {
		t.Errorf("remote: %v", err)
	}
	if !bytes.Equal(rgot, p) {
		t.Errorf("remote decoded %d bytes that differ from the %d sent", len(rgot), len(p))
	}
	// Every request refused exactly once, nothing else: the remote saw no
	// stray protocol from us. (Repeated WILL SGA in the echo are refused
	// again each time; check only the greeting's answers and their order.)
	want := []string{"WONT ECHO", "DONT SGA", "DONT BINARY", "WONT BINARY", "WONT COM-PORT-OPTION"}
	if len(negs) < len(want) || fmt.Sprint(negs[:len(want)]) != fmt.Sprint(want) {
		t.Errorf("refusals = %v, want first %v", negs, want)
	}
	for _, n := range negs[len(want):] {
		if n != "DONT SGA" {
			t.Errorf("unexpected negotiation from the device: %s", n)
		}
	}

	// Line control cannot travel over telnet.
	if err := dev.SetBreak(t.Context(), true); !errors.Is(err, rfc2217.ErrNotSupported) {
		t.Errorf("SetBreak: %v, want ErrNotSupported", err)
	}
	checkClose(t, dev)
}

// The remote hangs up: Read returns io.EOF promptly.
func TestTelnetRemoteGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	dev, err := Open(t.Context(), mustParse(t, "telnet://"+ln.Addr().String()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	c := <-accepted
	c.Write([]byte{255, 253, 1, 'x'}) // DO ECHO, data
	buf := make([]byte, 8)
	if n, err := dev.Read(buf); err != nil || string(buf[:n]) != "x" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	c.Close()
	if err := readErrWithin(t, dev, 2*time.Second); !errors.Is(err, io.EOF) {
		t.Errorf("Read after hang-up: %v, want io.EOF", err)
	}
}

// A remote that accepts and never reads: Write blocks once the socket
// buffers are full, and Close unblocks it (tcp and telnet kinds).
func TestCloseUnblocksWriteToStalledRemote(t *testing.T) {
	for _, scheme := range []string{"tcp", "telnet"} {
		t.Run(scheme, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			held := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					held <- c // never read
				}
			}()
			dev, err := Open(t.Context(), mustParse(t, scheme+"://"+ln.Addr().String()), Options{})
			if err != nil {
				t.Fatal(err)
			}
			c := <-held
			defer c.Close()
			errc := make(chan error, 1)
			go func() {
				_, err := dev.Write(make([]byte, 64<<20))
				errc <- err
			}()
			select {
			case err := <-errc:
				t.Fatalf("64 MiB Write to a stalled remote returned early: %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			dev.Close()
			select {
			case err := <-errc:
				if !errors.Is(err, ErrClosed) {
					t.Errorf("blocked Write after Close: %v, want ErrClosed", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Close did not unblock Write")
			}
		})
	}
}
