package rfc2217_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/rfc2217/rfc2217test"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// logBuffer is a slog handler target that tests can search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   testing.TB
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// memSession runs rfc2217test.ServeConn over net.Pipe in front of port and
// returns a connected Client and the device end of the serial line.
func memSession(t *testing.T, port rfc2217.Port, sopts rfc2217test.ServerOptions, copts rfc2217.ClientOptions) (*rfc2217.Client, net.Conn) {
	t.Helper()
	cconn, sconn := net.Pipe()
	devServer, devTest := net.Pipe()
	sopts.Device = devServer
	if sopts.Logger == nil {
		sopts.Logger, _ = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { rfc2217test.ServeConn(ctx, sconn, port, sopts) })
	if copts.Logger == nil {
		copts.Logger, _ = testLogger(t)
	}
	c, err := rfc2217.NewClient(t.Context(), cconn, copts)
	if err != nil {
		cancel()
		wg.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
		wg.Wait()
		devServer.Close()
		devTest.Close()
	})
	return c, devTest
}

func TestClientSettings(t *testing.T) {
	// Both ways of starting the option: the server answers our WILL 44
	// (RFC), or it sends DO 44 first (ser2net, sredird).
	for _, sendDO := range []bool{false, true} {
		t.Run(fmt.Sprintf("server sends DO=%v", sendDO), func(t *testing.T) { testClientSettings(t, sendDO) })
	}
}

func testClientSettings(t *testing.T, sendDO bool) {
	port := rfc2217test.NewMemPort(rfc2217.Settings{Baud: 9600, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone})
	c, _ := memSession(t, port, rfc2217test.ServerOptions{SendDO: sendDO}, rfc2217.ClientOptions{
		Initial: rfc2217.Settings{Baud: 115200},
	})
	if !c.ComPort() {
		t.Fatal("COM-PORT-OPTION not agreed")
	}
	if got := c.Settings().String(); got != "115200 8N1" {
		t.Errorf("after NewClient: %q, want 115200 8N1 (set baud, queried the rest)", got)
	}
	got, err := c.SetSettings(t.Context(), rfc2217.Settings{Baud: 57600, StopSize: rfc2217.Stop2, Parity: rfc2217.ParityEven, DataSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != "57600 7E2" || port.Current().String() != "57600 7E2" {
		t.Errorf("SetSettings → %v, port has %v; want 57600 7E2", got, port.Current())
	}
	got, err = c.SetSettings(t.Context(), rfc2217.Settings{Flow: rfc2217.FlowHardware})
	if err != nil || got.Flow != rfc2217.FlowHardware || port.Current().Flow != rfc2217.FlowHardware {
		t.Errorf("flow: %v %v, port %v", got, err, port.Current())
	}
	if _, err := c.SetSettings(t.Context(), rfc2217.Settings{DataSize: 9}); err == nil || !strings.HasPrefix(err.Error(), "rfc2217: invalid data size 9") {
		t.Errorf("DataSize 9: err %v", err)
	}
	if c.ServerSignature() != rfc2217.DefaultServerSignature {
		t.Errorf("server signature %q", c.ServerSignature())
	}
}

func TestClientLinesAndNotifications(t *testing.T) {
	port := rfc2217test.NewMemPort(rfc2217.Settings{Baud: 9600})
	notified := make(chan rfc2217.ModemState, 100)
	c, _ := memSession(t, port, rfc2217test.ServerOptions{PollModem: 5 * time.Millisecond}, rfc2217.ClientOptions{
		OnNotify: func(_ rfc2217.LineState, m rfc2217.ModemState) { notified <- m },
	})
	ctx := t.Context()
	if err := c.SetDTR(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRTS(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := c.SetBreak(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Purge(ctx, rfc2217.PurgeBoth); err != nil {
		t.Fatal(err)
	}
	if dtr, rts, brk := port.Lines(); dtr || rts || !brk {
		t.Errorf("port lines dtr=%v rts=%v break=%v", dtr, rts, brk)
	}
	waitModem(t, c, notified, func(m rfc2217.ModemState) bool {
		return m&(rfc2217.ModemCTS|rfc2217.ModemDSR) == 0 && m&rfc2217.ModemCD != 0
	})
	if err := c.SetRTS(ctx, true); err != nil {
		t.Fatal(err)
	}
	waitModem(t, c, notified, func(m rfc2217.ModemState) bool { return m&rfc2217.ModemCTS != 0 })
}

func waitModem(t *testing.T, c *rfc2217.Client, notified <-chan rfc2217.ModemState, ok func(rfc2217.ModemState) bool) {
	t.Helper()
	timeout := time.After(testwait.Timeout)
	for {
		select {
		case m := <-notified:
			if ok(m) {
				got, err := c.ModemState(t.Context())
				if err != nil || !ok(got) {
					t.Fatalf("ModemState() = %v, %v after notification %v", got, err, m)
				}
				return
			}
		case <-timeout:
			m, err := c.ModemState(t.Context())
			t.Fatalf("modem state never matched; last %v %v", m, err)
		}
	}
}

// iacHeavy returns n random bytes, about a quarter of them 0xFF.
func iacHeavy(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		if r.IntN(4) == 0 {
			b[i] = 0xff
		} else {
			b[i] = byte(r.IntN(256))
		}
	}
	return b
}

func TestClientDataBothWays(t *testing.T) {
	port := rfc2217test.NewMemPort(rfc2217.Settings{Baud: 9600})
	c, dev := memSession(t, port, rfc2217test.ServerOptions{}, rfc2217.ClientOptions{MaxBuffered: 1024})
	up, down := iacHeavy(200_000, 1), iacHeavy(200_000, 2)
	var wg sync.WaitGroup
	var gotUp, gotDown []byte
	var errUp, errDown error
	wg.Go(func() { gotUp, errUp = readN(dev, len(up)) })
	wg.Go(func() { gotDown, errDown = readN(c, len(down)) })
	wg.Go(func() {
		for b := up; len(b) > 0; b = b[min(len(b), 3000):] {
			if _, err := c.Write(b[:min(len(b), 3000)]); err != nil {
				t.Error(err)
				return
			}
		}
	})
	if _, err := dev.Write(down); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if errUp != nil || !bytes.Equal(gotUp, up) {
		t.Errorf("client→device: %v, equal=%v", errUp, bytes.Equal(gotUp, up))
	}
	if errDown != nil || !bytes.Equal(gotDown, down) {
		t.Errorf("device→client: %v, equal=%v", errDown, bytes.Equal(gotDown, down))
	}
}

func readN(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

// fakeServer is a scripted access server on the far end of a net.Pipe:
// it answers negotiation with the given bytes and calls onSB for every
// COM-PORT-OPTION subnegotiation the client sends; the returned bytes are
// written back. It records every payload, to check what the client sent.
type fakeServer struct {
	conn    net.Conn
	mu      sync.Mutex
	sent    [][]byte // COM-PORT-OPTION payloads from the client
	data    bytes.Buffer
	onSB    func(payload []byte) []byte
	onOpt   func(verb telnet.Command, opt telnet.Option) []byte
	done    chan struct{}
	readErr error
}

func startFake(t *testing.T, greet []byte, onOpt func(telnet.Command, telnet.Option) []byte, onSB func([]byte) []byte) (*fakeServer, net.Conn) {
	cconn, sconn := net.Pipe()
	f := &fakeServer{conn: sconn, onSB: onSB, onOpt: onOpt, done: make(chan struct{})}
	go f.run(greet)
	t.Cleanup(func() { sconn.Close(); <-f.done })
	return f, cconn
}

func (f *fakeServer) run(greet []byte) {
	defer close(f.done)
	var wmu sync.Mutex
	write := func(b []byte) {
		if len(b) == 0 {
			return
		}
		wmu.Lock()
		defer wmu.Unlock()
		f.conn.Write(b)
	}
	go write(greet) // net.Pipe: do not block reading on our own greeting
	var d telnet.Decoder
	d.Binary = true
	buf := make([]byte, 4096)
	for {
		n, err := f.conn.Read(buf)
		if err != nil {
			f.readErr = err
			return
		}
		var out []byte
		d.Decode(buf[:n], func(ev telnet.Event) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			switch ev.Kind {
			case telnet.EventData:
				f.data.Write(ev.Data)
			case telnet.EventNegotiation:
				if f.onOpt != nil {
					out = append(out, f.onOpt(ev.Command, ev.Option)...)
				}
			case telnet.EventSubnegotiation:
				if ev.Option == telnet.ComPort {
					p := append([]byte(nil), ev.Data...)
					f.sent = append(f.sent, p)
					if f.onSB != nil {
						out = append(out, f.onSB(p)...)
					}
				}
			}
			return nil
		})
		go write(out)
	}
}

func (f *fakeServer) payloads() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.sent...)
}

func (f *fakeServer) received() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.data.Bytes()...)
}

// agreeAll answers the client's WILL/DO with DO/WILL.
func agreeAll(verb telnet.Command, opt telnet.Option) []byte {
	switch verb {
	case telnet.WILL:
		return telnet.AppendNegotiation(nil, telnet.DO, opt)
	case telnet.DO:
		return telnet.AppendNegotiation(nil, telnet.WILL, opt)
	}
	return nil
}

// A server that never acknowledges: every Port call returns after about
// AckTimeout with the requested value, logged once; data keeps flowing.
func TestClientAckTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, conn := startFake(t, nil, agreeAll, nil)
		log, logs := testLogger(t)
		start := time.Now()
		c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{Logger: log, AckTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if d := time.Since(start); d != 500*time.Millisecond {
			t.Errorf("NewClient took %v, want one AckTimeout (the unanswered queries)", d)
		}
		start = time.Now()
		got, err := c.SetSettings(t.Context(), rfc2217.Settings{Baud: 57600, StopSize: rfc2217.Stop2})
		if err != nil || got.Baud != 57600 || got.StopSize != rfc2217.Stop2 {
			t.Errorf("SetSettings = %v, %v", got, err)
		}
		if d := time.Since(start); d != 500*time.Millisecond {
			t.Errorf("SetSettings took %v, want one AckTimeout for the whole batch", d)
		}
		if err := c.SetDTR(t.Context(), true); err != nil {
			t.Error(err)
		}
		if _, err := c.Write([]byte("still flowing \xff")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := string(f.received()); got != "still flowing \xff" {
			t.Errorf("server got %q", got)
		}
		if !strings.Contains(logs.String(), "no acknowledgement") {
			t.Error("missing log line about the missing acknowledgement")
		}
		if u := c.Unacknowledged(); u != "SET-BAUDRATE 57600, SET-STOPSIZE 2, SET-CONTROL DTR-ON" {
			t.Errorf("Unacknowledged() = %q", u)
		}
		start = time.Now()
		if _, err := c.ModemState(t.Context()); !errors.Is(err, rfc2217.ErrNotSupported) {
			t.Errorf("ModemState without notifications: %v, want ErrNotSupported", err)
		}
		if _, err := c.ModemState(t.Context()); !errors.Is(err, rfc2217.ErrNotSupported) {
			t.Errorf("ModemState again: %v, want ErrNotSupported", err)
		}
		if d := time.Since(start); d != 500*time.Millisecond {
			t.Errorf("two ModemState calls took %v, want one AckTimeout (the first poll)", d)
		}
	})
}

// A server that suspends our output: Write waits until RESUME; Close
// unblocks a waiting Write. The client itself never sends SUSPEND/RESUME.
func TestClientSuspendResumeAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		greet := telnet.AppendNegotiation(nil, telnet.DO, telnet.ComPort)
		greet = rfc2217.AppendMessage(greet, rfc2217.Message{Command: rfc2217.FlowControlSuspend.Reply()})
		f, conn := startFake(t, greet, agreeAll, nil)
		c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{AckTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if !c.Suspended() {
			t.Fatal("not suspended after SERVER-FLOWCONTROL-SUSPEND")
		}
		wrote := make(chan error, 1)
		go func() { _, err := c.Write([]byte("held")); wrote <- err }()
		synctest.Wait()
		select {
		case err := <-wrote:
			t.Fatalf("Write returned while suspended: %v", err)
		default:
		}
		f.conn.Write(rfc2217.AppendMessage(nil, rfc2217.Message{Command: rfc2217.FlowControlResume.Reply()}))
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if string(f.received()) != "held" {
			t.Errorf("server got %q", f.received())
		}

		// Suspend again and close while a Write waits; a Read waits too.
		f.conn.Write(rfc2217.AppendMessage(nil, rfc2217.Message{Command: rfc2217.FlowControlSuspend.Reply()}))
		synctest.Wait()
		go func() { _, err := c.Write([]byte("never")); wrote <- err }()
		read := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 10)); read <- err }()
		synctest.Wait()
		c.Close()
		if err := <-wrote; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close: %v", err)
		}
		if err := <-read; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v", err)
		}
		for _, p := range f.payloads() {
			if c := rfc2217.Command(p[0]); c == rfc2217.FlowControlSuspend || c == rfc2217.FlowControlResume {
				t.Errorf("client sent %v", c)
			}
		}
	})
}

// A server that refuses COM-PORT-OPTION still carries data; line control
// says ErrNotSupported.
func TestClientServerRefusesComPort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refuse44 := func(verb telnet.Command, opt telnet.Option) []byte {
			if opt == telnet.ComPort {
				return telnet.AppendNegotiation(nil, telnet.DONT, opt)
			}
			return agreeAll(verb, opt)
		}
		f, conn := startFake(t, []byte("banner\r\n"), refuse44, nil)
		c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.ComPort() {
			t.Error("ComPort() true after DONT 44")
		}
		if err := c.SetDTR(t.Context(), true); !errors.Is(err, rfc2217.ErrNotSupported) {
			t.Errorf("SetDTR: %v", err)
		}
		if got, err := readN(c, 8); err != nil || string(got) != "banner\r\n" {
			t.Errorf("read %q %v", got, err)
		}
		c.Write([]byte{0xff, 0})
		synctest.Wait()
		if !bytes.Equal(f.received(), []byte{0xff, 0}) {
			t.Errorf("server got % x", f.received())
		}
		if len(f.payloads()) != 0 {
			t.Errorf("client sent subnegotiations after DONT 44: %x", f.payloads())
		}
	})
}

// NewClient answers the server's SIGNATURE request, records the server's
// reply quirks, and a closed connection ends Read with io.EOF.
func TestClientQuirkyServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Like sredird: 8-byte baud replies, every SET-CONTROL acked as
		// FLOW-NONE, and it asks for our signature.
		greet := telnet.AppendNegotiation(nil, telnet.DO, telnet.ComPort)
		greet = rfc2217.AppendMessage(greet, rfc2217.Message{Command: rfc2217.Signature.Reply()})
		var f *fakeServer
		f, conn := startFake(t, greet, agreeAll, func(p []byte) []byte {
			m, _ := rfc2217.Parse(p)
			switch m.Command {
			case rfc2217.SetBaudrate:
				b := m.Baud
				if b == 0 {
					b = 9600
				}
				return telnet.AppendSubnegotiation(nil, telnet.ComPort, []byte{101, byte(b >> 24), byte(b >> 16), byte(b >> 8), byte(b), 0, 0, 0, 0})
			case rfc2217.SetControl:
				return rfc2217.AppendMessage(nil, rfc2217.Message{Command: 105, Value: 1})
			case rfc2217.Signature:
				return rfc2217.AppendMessage(nil, rfc2217.Message{Command: 100, Text: "SRedird 2.2.1 fake"})
			}
			return nil
		})
		log, logs := testLogger(t)
		c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{Logger: log, Signature: "tester"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if s, err := c.SetSettings(t.Context(), rfc2217.Settings{Baud: 0xffff}); err != nil || s.Baud != 0xffff {
			t.Errorf("baud 65535: %v %v", s, err)
		}
		if err := c.SetDTR(t.Context(), false); err != nil {
			t.Error(err)
		}
		synctest.Wait()
		for _, want := range []string{"padded a reply", "unexpected acknowledgement", "no acknowledgement", "SRedird 2.2.1 fake"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks %q", want)
			}
		}
		var sawSig bool
		for _, p := range f.payloads() {
			if string(p) == "\x00tester" {
				sawSig = true
			}
		}
		if !sawSig {
			t.Errorf("client did not answer the signature request: %q", f.payloads())
		}
		f.conn.Close()
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("Read after server closed: %v", err)
		}
	})
}

// FuzzClient feeds arbitrary server bytes to a Client: it must not panic,
// must hand over data, and Close must always return with no goroutine left.
func FuzzClient(f *testing.F) {
	f.Add([]byte("\xff\xfd\x2c\xff\xfa\x2c\x65\x00\x00\x25\x80\xff\xf0data\xff\xff"))
	f.Add([]byte("\xff\xfa\x2c\x6c\xff\xf0\xff\xfa\x2c\x6d\xff\xf0"))
	f.Add([]byte("\xff\xfa\x2c\x65\x00\x00\x96\x00\x00\x00\x00\x00\xff\xf0"))
	f.Add([]byte("\xff\xfa\x2c\x64\xff\xf0\xff\xfa\x2c\xff\xff\xff\xf0"))
	f.Add([]byte("\xff\xfb\x00\xff\xfd\x00\xff\xfe\x2c\xff\xfc\x00\r\x00\n"))
	f.Add([]byte("\xff\xfa\x2c\x6b"))
	f.Fuzz(func(t *testing.T, in []byte) {
		synctest.Test(t, func(t *testing.T) {
			cconn, sconn := net.Pipe()
			go func() {
				sconn.Write(telnet.AppendNegotiation(nil, telnet.DO, telnet.ComPort))
				sconn.Write(in)
				sconn.Close()
			}()
			go io.Copy(io.Discard, sconn)
			c, err := rfc2217.NewClient(t.Context(), cconn, rfc2217.ClientOptions{AckTimeout: 10 * time.Millisecond, HandshakeTimeout: 10 * time.Millisecond})
			if err != nil {
				return // the server closed during negotiation
			}
			c.SetSettings(t.Context(), rfc2217.Settings{Baud: 1200})
			c.ModemState(t.Context())
			io.Copy(io.Discard, c)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// A server that sends no modem state until polled (pyserial's server
// answers an empty NOTIFY-MODEMSTATE): ModemState polls once and takes the
// answer, also when OnNotify is set (regression: the callback path skipped
// recording the answer).
func TestClientModemPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, conn := startFake(t, nil, agreeAll, func(p []byte) []byte {
			if len(p) == 1 && rfc2217.Command(p[0]) == rfc2217.NotifyModemstate {
				return rfc2217.AppendMessage(nil, rfc2217.Message{Command: rfc2217.NotifyModemstate.Reply(), Value: 0xb0})
			}
			return nil
		})
		var calls int
		c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{
			AckTimeout: time.Second,
			OnNotify:   func(rfc2217.LineState, rfc2217.ModemState) { calls++ },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		m, err := c.ModemState(t.Context())
		if err != nil || m != rfc2217.ModemCD|rfc2217.ModemDSR|rfc2217.ModemCTS {
			t.Errorf("ModemState = %v, %v", m, err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("poll answered, yet ModemState waited %v", d)
		}
		synctest.Wait()
		if calls != 1 {
			t.Errorf("OnNotify called %d times", calls)
		}
	})
}

// The server going away ends a pending Port call at once, not after the
// acknowledgement timeout.
func TestClientServerGoneDuringRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var f *fakeServer
		f, conn := startFake(t, nil, agreeAll, func(p []byte) []byte {
			if rfc2217.Command(p[0]) == rfc2217.PurgeData {
				go f.conn.Close()
			}
			return nil
		})
		c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{AckTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		err = c.Purge(t.Context(), rfc2217.PurgeRX)
		if !errors.Is(err, io.EOF) || time.Since(start) != 0 {
			t.Errorf("Purge = %v after %v, want io.EOF at once", err, time.Since(start))
		}
	})
}

// With Background, NewClient returns at once and data flows while the
// negotiation and the initial settings are still out: a server that
// answers no query (VMware's serial_diagnostics.py) costs the data
// nothing. A Write holding a CR waits only for the BINARY answer.
func TestClientBackground(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, conn := startFake(t, nil, agreeAll, nil)
		start := time.Now()
		c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{
			AckTimeout: 500 * time.Millisecond, Background: true,
			Initial: rfc2217.Settings{Baud: 115200, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if d := time.Since(start); d != 0 {
			t.Errorf("NewClient took %v", d)
		}
		if _, err := c.Write([]byte("first\xff")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("cr\r")); err != nil { // after the BINARY answer: no NUL
			t.Fatal(err)
		}
		synctest.Wait()
		if d := time.Since(start); d != 0 {
			t.Errorf("the data waited %v", d)
		}
		if got := string(f.received()); got != "first\xffcr\r" {
			t.Errorf("server got %q", got)
		}
		// A Port call waits for the initial batch (one AckTimeout), but not
		// again for a kind of request the server left unanswered.
		got, err := c.SetSettings(t.Context(), rfc2217.Settings{Baud: 57600})
		if err != nil || got.Baud != 57600 || got.DataSize != 8 {
			t.Errorf("SetSettings = %v, %v", got, err)
		}
		if d := time.Since(start); d != 500*time.Millisecond {
			t.Errorf("SetSettings returned after %v, want one AckTimeout", d)
		}
		synctest.Wait()
		var bauds []uint32
		for _, p := range f.payloads() {
			if m, err := rfc2217.Parse(p); err == nil && m.Command == rfc2217.SetBaudrate {
				bauds = append(bauds, m.Baud)
			}
		}
		if fmt.Sprint(bauds) != "[115200 57600]" {
			t.Errorf("SET-BAUDRATE sent %v, want the initial then the guest's", bauds)
		}
	})
}

// With Background and a server that never negotiates, data without a CR
// goes at once, and a CR waits for HandshakeTimeout and then goes as NVT
// (CR NUL).
func TestClientBackgroundSilentServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, conn := startFake(t, nil, nil, nil)
		start := time.Now()
		c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{Background: true, HandshakeTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := string(f.received()); got != "x" || time.Since(start) != 0 {
			t.Errorf("server got %q after %v", got, time.Since(start))
		}
		if _, err := c.Write([]byte("\r")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("the CR waited %v, want the handshake timeout", d)
		}
		if got := string(f.received()); got != "x\r\x00" {
			t.Errorf("server got %q", got)
		}
		if err := c.SetDTR(t.Context(), true); !errors.Is(err, rfc2217.ErrNotSupported) {
			t.Errorf("SetDTR without COM-PORT-OPTION: %v", err)
		}
	})
}

// A request the server did not acknowledge stays in Unacknowledged until a
// later request of the same kind is acknowledged.
func TestClientUnacknowledgedClears(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var answer atomic.Bool
		_, conn := startFake(t, nil, agreeAll, func(p []byte) []byte {
			m, err := rfc2217.Parse(p)
			if err != nil || !answer.Load() {
				return nil
			}
			m.Command = m.Command.Reply()
			return rfc2217.AppendMessage(nil, m)
		})
		c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{AckTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.SetSettings(t.Context(), rfc2217.Settings{Baud: 57600}); err != nil {
			t.Fatal(err)
		}
		if u := c.Unacknowledged(); u != "SET-BAUDRATE 57600" {
			t.Errorf("Unacknowledged() = %q", u)
		}
		// The next SET-BAUDRATE is not waited for (the server left the last
		// one unanswered); its acknowledgement, when it comes, clears it.
		answer.Store(true)
		start := time.Now()
		if _, err := c.SetSettings(t.Context(), rfc2217.Settings{Baud: 9600}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("a SET-BAUDRATE after an unanswered one waited %v", d)
		}
		synctest.Wait()
		if u := c.Unacknowledged(); u != "" {
			t.Errorf("Unacknowledged() = %q after an acknowledged SET-BAUDRATE", u)
		}
	})
}
