package vspc_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/telnet"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// A dialogue (../testdata/*.dialogue) is a recorded conversation between
// ESXi hosts and a vSPC, replayed against our server byte by byte; the
// files say where the recording comes from and where our answers
// deliberately differ. Each line is one step:
//
//	VM> hex, VMn> hex      the host writes these bytes on connection n (1 if no n)
//	<P hex, <Pn hex        our server must send these bytes on connection n next
//	close n                the host closes connection n
//	rand hex               the server's random source yields these bytes next
//	policy vmotion off|on  [vmotion] enabled = false / true from here on
//	REMOTE> hex            the remote system sends these bytes to the VM
//
// A connection opens at its first line. Blank lines and # comments are
// skipped.
type dialogueStep struct {
	line int
	verb string // "VM", "<P", "close", "rand", "policy", "REMOTE"
	conn int
	data []byte
	arg  string
}

func loadDialogue(t *testing.T, path string) []dialogueStep {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []dialogueStep
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		word, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		st := dialogueStep{line: n, conn: 1}
		bad := func(err error) { t.Fatalf("%s:%d: %q: %v", path, n, line, err) }
		unhex := func(s string) []byte {
			b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
			if err != nil {
				bad(err)
			}
			return b
		}
		connNo := func(s string) int {
			if s == "" {
				return 1
			}
			k, err := strconv.Atoi(s)
			if err != nil || k < 1 {
				bad(fmt.Errorf("bad connection number %q", s))
			}
			return k
		}
		switch {
		case word == "REMOTE>":
			st.verb, st.data = "REMOTE", unhex(rest)
		case strings.HasPrefix(word, "VM") && strings.HasSuffix(word, ">"):
			st.verb, st.conn, st.data = "VM", connNo(word[2:len(word)-1]), unhex(rest)
		case strings.HasPrefix(word, "<P"):
			st.verb, st.conn, st.data = "<P", connNo(word[2:]), unhex(rest)
		case word == "close":
			st.verb, st.conn = "close", connNo(rest)
		case word == "rand":
			st.verb, st.data = "rand", unhex(rest)
		case word == "policy":
			if rest != "vmotion off" && rest != "vmotion on" {
				bad(errors.New("want policy vmotion off|on"))
			}
			st.verb, st.arg = "policy", rest
		default:
			bad(errors.New("unknown step"))
		}
		steps = append(steps, st)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return steps
}

// dialogueRand is the server's random source in a replay: what the rand
// lines put in, in order. A draw the dialogue did not provide for fails the
// test (and the server sees an error).
type dialogueRand struct {
	t   *testing.T
	mu  sync.Mutex
	buf []byte
}

func (r *dialogueRand) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < len(p) {
		r.t.Errorf("the server drew %d random bytes where the dialogue has no rand line", len(p))
		return 0, errors.New("dialogue: no rand line left for this read")
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// hostConn is the host's end of one replayed connection.
type hostConn struct {
	nc      net.Conn
	replies chan byte // what the server sent, byte by byte; closed when it closed
	dec     telnet.Decoder
}

// replayDialogue runs the dialogue in path against a pipeEnv, inside a
// synctest bubble (call it from synctest.Test), and checks every byte the
// server sends, that it sends nothing else, and that the remote system
// receives exactly the VM's serial data, in order. It returns the env for
// further checks.
func replayDialogue(t *testing.T, path string) *pipeEnv {
	t.Helper()
	return replay(t, path, false)
}

// replay runs a dialogue (see replayDialogue). With relayed, every host
// connection reaches another server first, which serves no port itself
// and hands each connection over to the env's (forward_test.go): the host
// must see the same bytes.
func replay(t *testing.T, path string, relayed bool) *pipeEnv {
	t.Helper()
	steps := loadDialogue(t, path)
	rnd := &dialogueRand{t: t}
	e := newPipeEnv(t, func(c *vspc.Config) { c.Rand = rnd })
	connect := e.conn
	if relayed {
		connect = newRelay(t, e.srv).conn
	}
	conns := map[int]*hostConn{}
	var wantData []byte // the VM's serial data, in the order it must reach the remote
	open := func(n int) *hostConn {
		if hc := conns[n]; hc != nil {
			return hc
		}
		hc := &hostConn{nc: connect(), replies: make(chan byte, 64<<10)}
		hc.dec.Binary = true
		// net.Pipe is synchronous: read what the server sends on a
		// goroutine of its own.
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := hc.nc.Read(buf)
				for _, b := range buf[:n] {
					hc.replies <- b
				}
				if err != nil {
					close(hc.replies)
					return
				}
			}
		}()
		conns[n] = hc
		return hc
	}
	for _, st := range steps {
		where := fmt.Sprintf("%s:%d", path, st.line)
		switch st.verb {
		case "VM":
			hc := open(st.conn)
			if err := hc.dec.Decode(append([]byte(nil), st.data...), func(ev telnet.Event) error {
				if ev.Kind == telnet.EventData {
					wantData = append(wantData, ev.Data...)
				}
				return nil
			}); err != nil {
				t.Fatalf("%s: the dialogue's own bytes do not decode: %v", where, err)
			}
			if _, err := hc.nc.Write(st.data); err != nil {
				t.Fatalf("%s: write on connection %d: %v", where, st.conn, err)
			}
		case "<P":
			hc := open(st.conn)
			got := make([]byte, 0, len(st.data))
			for len(got) < len(st.data) {
				select {
				case b, ok := <-hc.replies:
					if !ok {
						t.Fatalf("%s: connection %d closed by the server; got\n % x\nwant\n % x", where, st.conn, got, st.data)
					}
					got = append(got, b)
				case <-time.After(time.Minute): // the bubble's clock: a minute of nothing
					t.Fatalf("%s: connection %d: the server sent\n % x\nwant\n % x", where, st.conn, got, st.data)
				}
			}
			if !bytes.Equal(got, st.data) {
				t.Fatalf("%s: connection %d: the server sent\n % x\nwant\n % x", where, st.conn, got, st.data)
			}
		case "close":
			hc := conns[st.conn]
			if hc == nil {
				t.Fatalf("%s: close of connection %d, which was never opened", where, st.conn)
			}
			hc.nc.Close()
		case "rand":
			rnd.mu.Lock()
			rnd.buf = append(rnd.buf, st.data...)
			rnd.mu.Unlock()
		case "policy":
			e.srv.SetConfig(vspc.Config{VMotionDisabled: st.arg == "vmotion off"})
		case "REMOTE":
			if _, err := e.backend(0).remote().Write(st.data); err != nil {
				t.Fatalf("%s: the remote's write: %v", where, err)
			}
		}
		synctest.Wait() // the server has done all it will do for this step
	}
	// Nothing more was sent on any connection.
	for n, hc := range conns {
		select {
		case b, ok := <-hc.replies:
			if ok {
				t.Fatalf("connection %d: unexpected byte %02x after the dialogue", n, b)
			}
		default:
		}
	}
	if got := e.backend(0).received(); !bytes.Equal(got, wantData) {
		t.Fatalf("the remote received\n % x\nwant the VM's serial data\n % x", got, wantData)
	}
	e.mu.Lock()
	opened := len(e.backends)
	e.mu.Unlock()
	if opened != 1 {
		t.Fatalf("the Bridger opened %d backends, want 1 (one port for the whole dialogue)", opened)
	}
	rnd.mu.Lock()
	left := len(rnd.buf)
	rnd.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d bytes of rand lines were not drawn", left)
	}
	return e
}

// esxiRequest is what the VM of VMware's capture asks for.
var esxiRequest = vspc.Request{Direction: vspc.DirServer, ServiceURI: "vSPC.py", VMName: "vm-00000", VCUUID: "01234567-89ab-cdef-fedc-ba9800000000"}

// TestHandshakeReplay replays the ESXi side of VMware's capture (session 1,
// the connect handshake) against the server over net.Pipe and checks every
// reply byte for byte.
func TestHandshakeReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := replayDialogue(t, "../testdata/esxi-capture-4.1-handshake.dialogue")
		if got := e.backend(0).received(); !bytes.Equal(got, []byte{0x20, 0x21, 0x22}) {
			t.Fatalf("backend got % x", got)
		}
		req := e.backend(0).req
		req.Peer = nil
		if req != esxiRequest {
			t.Fatalf("request %+v, want %+v", req, esxiRequest)
		}
	})
}

// TestVMotionReplay replays the four connections of VMware's capture
// through three vMotion hand-overs, a NOTNOW and an ABORT (esxi-wire.md
// §4.2-4.3), byte by byte on both sides of every hand-over.
func TestVMotionReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := replayDialogue(t, "../testdata/esxi-capture-4.2-4.3-vmotion.dialogue")
		req := e.backend(0).req
		req.Peer = nil
		if req != esxiRequest {
			t.Fatalf("request %+v, want %+v", req, esxiRequest)
		}
		k := e.srv.Counters()
		if k.VMotionsCompleted != 3 || k.VMotionsNotNow != 1 || k.VMotionsAborted != 1 || k.VMotionsBadSecret != 0 || k.Reconnects != 0 || k.HandshakeFailures != 0 {
			t.Fatalf("counters %+v, want 3 completed, 1 NOTNOW, 1 aborted and nothing else", k)
		}
		// Every host has gone: the port waits out its grace period.
		p := e.port()
		if p.State != "detached" || p.VMotions != 3 || p.Queued != 0 || p.LastHandOver == nil || p.LastHandOver.Outcome != "completed" {
			t.Fatalf("port %+v, last hand-over %+v", p, p.LastHandOver)
		}
	})
}
