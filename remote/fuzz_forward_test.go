package remote

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// frames is a reference parse of a console stream: the frames up to the
// first that does not parse.
func frames(b []byte) (typs []byte, payloads [][]byte) {
	r := bufio.NewReader(bytes.NewReader(b))
	var buf []byte
	for {
		typ, p, err := readFrame(r, &buf)
		if err != nil {
			return typs, payloads
		}
		typs = append(typs, typ)
		payloads = append(payloads, append([]byte(nil), p...))
	}
}

// blockedInput is a user who types nothing: its read returns only once
// interrupted (or closed).
type blockedInput struct {
	intr chan struct{}
	quit chan struct{}
}

func (b *blockedInput) readInput() (inputEvent, error) {
	select {
	case <-b.intr:
		return inputEvent{}, errInterrupted
	case <-b.quit:
		return inputEvent{}, net.ErrClosed
	}
}

func (b *blockedInput) interrupt() {
	select {
	case b.intr <- struct{}{}:
	default:
	}
}

func (b *blockedInput) clearInterrupt() {
	select {
	case <-b.intr:
	default:
	}
}

// pipeCluster hands out one end of a pipe as the console stream.
type pipeCluster struct{ conn net.Conn }

func (p pipeCluster) Consoles(context.Context) ([]ClusterConsole, error) { return nil, nil }
func (p pipeCluster) DialConsole(context.Context, ClusterConsole, []byte) (net.Conn, error) {
	return p.conn, nil
}

// syncBuf collects a user's output.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

// FuzzConsoleStream feeds arbitrary bytes to both ends of a console
// stream (the member link's "console" kind). Kind 0: the owner
// (ServeForwarded) reads them as the front door's frames, after a valid
// request for a read-write user; kind 1: the bytes are the request itself
// and no frames follow; kind 2: the front door (attachRemote's relay)
// reads them as the owner's frames. Properties: each side ends when its
// input does; the owner's output is well-formed frames of its kinds, with
// at most one end frame, last; what reaches the VM is a subsequence of
// the input frames' data, with no more BREAKs than were asked for; no
// client stays attached; and the front door's user gets exactly the
// output, notice and refusal frames' payloads, in order.
func FuzzConsoleStream(f *testing.F) {
	fr := func(typ byte, p string) []byte { return appendFrame(nil, typ, []byte(p)) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	f.Add(cat(fr('i', "hello"), fr('b', ""), fr('x', "w"), fr('x', "s"), fr('i', "ro"), fr('x', "a"), fr('i', "rw"), fr('q', "")), uint8(0))
	f.Add(cat(fr('i', "x"), fr('x', "."), fr('x', "?"), []byte{'i', 0xff, 0xff, 0xff, 0xff}), uint8(0))
	f.Add(cat(fr('z', "bad"), fr('i', "after")), uint8(0))
	f.Add([]byte(`{"key":"name:web-1 web-1","user":"alice","mode":"xw","via":"ssh","peer":"p"}`), uint8(1))
	f.Add([]byte(`{"key":"name:web-1 web-1","open":true}`), uint8(1))
	f.Add(cat(fr('d', "out\xff\r\n"), fr('c', "[notice]"), fr('r', "no"), fr('e', "gone"), fr('d', "late")), uint8(2))
	f.Add(cat(fr('d', "partial"), []byte{'d', 0, 0, 0, 9, 'x'}), uint8(2))
	f.Add(cat(fr('e', "dropped")), uint8(2))
	cfg := fuzzConfig(f, false)
	f.Fuzz(func(t *testing.T, in []byte, kind uint8) {
		kind %= 3
		h, err := New(cfg, nil, WithParker(nil)) // no epoll set per input: nothing here parks
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if kind == 2 {
			fuzzFrontDoorRelay(t, h, in)
			return
		}
		sink := &recordSink{}
		b, err := h.Open(context.Background(), vspc.Request{Direction: vspc.DirServer, ServiceURI: "web-1", VMName: "web-1"}, sink)
		if err != nil {
			t.Fatal(err)
		}
		c := b.(*console)
		b.Write([]byte("boot output\r\n"))
		state, frameIn := in, []byte(nil)
		if kind == 0 {
			state, _ = json.Marshal(forwardRequest{Key: c.key, User: "alice", Interactive: true, Via: "telnet", Peer: "127.0.0.1:1"})
			frameIn = in
		}
		server, client := net.Pipe()
		var accepts int
		var accepted bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.ServeForwarded(context.Background(), server, "m2", state, func(err error) error {
				accepts++
				accepted = err == nil
				return nil
			})
		}()
		var out []byte
		read := make(chan struct{})
		go func() {
			defer close(read)
			out, _ = io.ReadAll(client)
		}()
		client.Write(frameIn) // fails once the session has ended by itself
		// The user goes: closing our write side ends the owner's read.
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeForwarded did not end after its input did")
		}
		<-read
		if accepts != 1 {
			t.Fatalf("accept called %d times", accepts)
		}
		if kind == 1 && accepted {
			var req forwardRequest
			if json.Unmarshal(in, &req) != nil || req.Key != c.key {
				t.Fatalf("accepted a request that names no console: %q", in)
			}
		}
		typs, _ := frames(out)
		for i, typ := range typs {
			switch typ {
			case frameData, frameControl, frameRefuse:
			case frameEnd:
				if i != len(typs)-1 {
					t.Fatalf("end frame %d of %d", i, len(typs))
				}
			default:
				t.Fatalf("owner sent frame type %q", typ)
			}
		}
		var data []byte
		brks := 0
		itypes, ips := frames(frameIn)
		for i, typ := range itypes {
			switch {
			case typ == frameInput:
				data = append(data, ips[i]...)
			case typ == frameBreak, typ == frameCommand && len(ips[i]) == 1 && ips[i][0] == cmdBreak:
				brks++
			}
		}
		got, gotBrk := sink.got()
		sink.mu.Lock()
		vmData := append([]byte(nil), sink.data...)
		sink.mu.Unlock()
		if got > len(data) || !subsequence(data, vmData) || gotBrk > brks {
			t.Fatalf("the VM got %q and %d BREAKs from frames with data %q and %d BREAKs", vmData, gotBrk, data, brks)
		}
		if n := len(c.info().Clients); n != 0 {
			t.Fatalf("%d clients still attached", n)
		}
	})
}

// fuzzFrontDoorRelay runs a front door's forwarded attachment whose owner
// sends in.
func fuzzFrontDoorRelay(t *testing.T, h *Hub, in []byte) {
	user, owner := net.Pipe()
	h.cluster = pipeCluster{conn: user}
	var sb syncBuf
	out := h.newOutQueue(&sb, nil, nil)
	bi := &blockedInput{intr: make(chan struct{}, 1), quit: make(chan struct{})}
	s := &session{h: h, log: h.log, peer: "p", ip: "p", via: "ssh", in: bi, out: out, enc: appendRaw,
		echo: func() bool { return false }, trusted: func() {}, userName: "alice", user: h.auth.user("alice")}
	rc := &ClusterConsole{Key: "name:web-1 web-1", VMName: "web-1", ServiceURI: "web-1", Member: "m1"}
	done := make(chan error, 1)
	go func() { done <- s.attachRemote(context.Background(), rc, nil) }()
	// The owner's side: send in, then read what the front door sends
	// (nothing but a detach, as the user types nothing) until it closes.
	go io.Copy(io.Discard, owner)
	owner.Write(in)
	owner.Close()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		close(bi.quit)
		t.Fatal("the relay did not end after the owner's stream did")
	}
	out.close("")
	out.wait()
	typs, ps := frames(in)
	var want []byte
	why := "" // the end frame's reason; "" without one
	for i, typ := range typs {
		if typ == frameData || typ == frameControl || typ == frameRefuse {
			want = append(want, ps[i]...)
			continue
		}
		if typ == frameEnd {
			why = string(ps[i])
		}
		break
	}
	got := sb.bytes()
	switch why {
	case endDropped:
		// The user is disconnected after the owner's last words.
		if !bytes.Equal(got, want) || !errors.Is(err, errDroppedHere) {
			t.Fatalf("dropped: the user got %q (err %v), want exactly %q", got, err, want)
		}
	case endDetached, endGone, endEnded, endClosing, endRefused:
		if !bytes.Equal(got, want) {
			t.Fatalf("after the end frame %q the user got %q, want exactly %q (err %v)", why, got, want, err)
		}
	default: // the stream broke (or an unknown end): told so after the output
		if !bytes.HasPrefix(got, want) {
			t.Fatalf("the user got %q, want %q first", got, want)
		}
	}
}

// TestWholeFramesOnDrop: the owner's queue for a console stream holds
// frames, which the writer hands the connection in chunks that may end
// inside one. Dropped while such a chunk is in flight (a client that
// fell behind), it keeps every frame whole: the front door reads the
// frames queued, then the drop message, and nothing that does not parse.
func TestWholeFramesOnDrop(t *testing.T) {
	g := newGateWriter()
	o := newOutQueue(g, 1<<20, nil, nil)
	o.ctl, o.whole = controlFrame, true
	out := bytes.Repeat([]byte("0123456789abcdef"), 40<<10/16) // one frame of 40 KiB: three chunks
	o.data(out, dataFrame, "", false)
	if first := <-g.got; len(first) != writeChunk {
		t.Fatalf("first chunk of %d bytes", len(first)) // in flight, inside the frame
	}
	o.drop("[dropped]")
	close(g.release)
	if err := o.wait(); err != nil {
		t.Fatal(err)
	}
	written := []byte(g.written())
	typs, ps := frames(written)
	if string(typs) != "dc" || !bytes.Equal(ps[0], out) || string(ps[1]) != "[dropped]" {
		t.Fatalf("frames %q (%d bytes written)", typs, len(written))
	}
	if n := len(encodeFrames(typs, ps)); n != len(written) {
		t.Fatalf("%d bytes written, %d of them frames", len(written), n)
	}
}

func encodeFrames(typs []byte, ps [][]byte) []byte {
	var b []byte
	for i, typ := range typs {
		b = appendFrame(b, typ, ps[i])
	}
	return b
}
