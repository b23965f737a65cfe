package vspc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/telnet"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// relay is a second server in front of an owner: it serves no port
// itself (its Bridger answers ErrElsewhere, as package cluster's does for
// a port another member holds) and hands every connection over to the
// owner through a Forwarder that marshals the Handoff as the member link
// does and runs the owner's ServeHandoff on a net.Pipe.
type relay struct {
	t     *testing.T
	srv   *vspc.Server
	owner *vspc.Server

	mu        sync.Mutex
	handoffs  []*vspc.Handoff
	forwardFn func(h *vspc.Handoff) (net.Conn, error) // replaces the hand-over when set
	opened    int                                     // backends its own Bridger opened (after ErrServeHere)
	serveHere bool                                    // its Bridger opens the port itself
}

func newRelay(t *testing.T, owner *vspc.Server) *relay {
	r := &relay{t: t, owner: owner}
	r.srv = vspc.NewServer(vspc.Config{Bridger: r, Forwarder: r, HandOvers: r, Logger: testLogger(t)})
	t.Cleanup(func() { r.srv.Close() })
	return r
}

// conn connects a host to the relay and returns the host's end.
func (r *relay) conn() net.Conn {
	host, proxy := net.Pipe()
	go r.srv.ServeConn(proxy)
	r.t.Cleanup(func() { host.Close() })
	return host
}

// Open implements vspc.Bridger.
func (r *relay) Open(ctx context.Context, req vspc.Request, vm vspc.Sink) (vspc.Backend, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.serveHere {
		r.opened++
		return &memBackend{req: req, sink: vm}, nil
	}
	return nil, fmt.Errorf("test: the owner serves it: %w", vspc.ErrElsewhere)
}

// Forward implements vspc.Forwarder.
func (r *relay) Forward(ctx context.Context, h *vspc.Handoff, why error) (net.Conn, error) {
	if !errors.Is(why, vspc.ErrElsewhere) {
		r.t.Errorf("Forward asked with %v, want an error wrapping ErrElsewhere", why)
	}
	return r.handOver(h)
}

func (r *relay) handOver(h *vspc.Handoff) (net.Conn, error) {
	b, err := json.Marshal(h)
	if err != nil {
		r.t.Error(err)
		return nil, err
	}
	h2, err := vspc.ParseHandoff(b)
	if err != nil {
		r.t.Errorf("the owner cannot parse the hand-off: %v\n%s", err, b)
		return nil, err
	}
	r.mu.Lock()
	r.handoffs = append(r.handoffs, h2)
	fn := r.forwardFn
	r.mu.Unlock()
	if fn != nil {
		return fn(h2)
	}
	h2.Via = "relay-1"
	near, far := net.Pipe()
	go r.owner.ServeHandoff(far, h2)
	return near, nil
}

// Begin, End and TakeOver implement vspc.HandOvers: a PEER the relay
// has no hand-over for is the owner's.
func (r *relay) Begin(vspc.PortKey, vspc.Request, []byte, int) error { return nil }
func (r *relay) End(vspc.PortKey, []byte)                            {}
func (r *relay) TakeOver(ctx context.Context, h *vspc.Handoff) (vspc.PeerResult, error) {
	c, err := r.handOver(h)
	return vspc.PeerResult{Conn: c}, err
}

func (r *relay) kinds() []vspc.HandoffKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var k []vspc.HandoffKind
	for _, h := range r.handoffs {
		k = append(k, h.Kind)
	}
	return k
}

// VMware's capture replayed through a relay: every host connection
// reaches a server that does not serve the port and is handed over to
// the one that does. The hosts see exactly the bytes of a direct run, the
// remote exactly the VM's data.
func TestHandshakeReplayRelayed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := replay(t, "../testdata/esxi-capture-4.1-handshake.dialogue", true)
		req := e.backend(0).req
		req.Peer = nil
		if req != esxiRequest {
			t.Fatalf("request %+v, want %+v", req, esxiRequest)
		}
		if p := e.port(); p.Via != "relay-1" {
			t.Fatalf("port %+v: want it relayed by relay-1", p)
		}
	})
}

func TestVMotionReplayRelayed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := replay(t, "../testdata/esxi-capture-4.2-4.3-vmotion.dialogue", true)
		k := e.srv.Counters()
		if k.VMotionsCompleted != 3 || k.VMotionsNotNow != 1 || k.VMotionsAborted != 1 || k.HandshakeFailures != 0 || k.HandedIn != 4 {
			t.Fatalf("owner's counters %+v, want 3 completed, 1 NOTNOW, 1 aborted, 4 handed in", k)
		}
	})
}

// A DO-PROXY the owner refuses gets its WONT-PROXY through the relay, and
// the relay closes the host's connection when the owner closes its side.
func TestRelayOwnerRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		owner := vspc.NewServer(vspc.Config{Bridger: refuser{}, Logger: testLogger(t)})
		defer owner.Close()
		r := newRelay(t, owner)
		_, err := vspctest.Handshake(t.Context(), r.conn(), testVM)
		if !errors.Is(err, vspctest.ErrWontProxy) {
			t.Fatalf("handshake: %v, want WONT-PROXY", err)
		}
		synctest.Wait()
		if k := r.srv.Counters(); k.Forwarded != 1 || r.srv.Sessions() != 0 {
			t.Fatalf("relay: counters %+v, %d sessions: want 1 forwarded, none left", k, r.srv.Sessions())
		}
		if k := owner.Counters(); k.Refused != 1 || k.HandedIn != 1 {
			t.Fatalf("owner's counters %+v", k)
		}
	})
}

type refuser struct{}

func (refuser) Open(context.Context, vspc.Request, vspc.Sink) (vspc.Backend, error) {
	return nil, errors.New("test: no route")
}

var testVM = vspctest.VM{Name: "vm-1", VCUUID: "50000000-0000-4000-8000-0000000000a1", Direction: vspc.DirClient, ServiceURI: "console"}

// When the connection cannot be handed over, the relay refuses it
// itself (WONT-PROXY); when the port turned out to be free, it serves it.
func TestRelayForwardFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipeEnv(t, nil)
		r := newRelay(t, e.srv)
		r.forwardFn = func(*vspc.Handoff) (net.Conn, error) { return nil, errors.New("test: the owner does not answer") }
		if _, err := vspctest.Handshake(t.Context(), r.conn(), testVM); !errors.Is(err, vspctest.ErrWontProxy) {
			t.Fatalf("handshake: %v, want WONT-PROXY", err)
		}
		r.mu.Lock()
		r.forwardFn = func(*vspc.Handoff) (net.Conn, error) { return nil, vspc.ErrServeHere }
		r.serveHere = false
		r.mu.Unlock()
		// ErrServeHere: attach again, and this time the Bridger opens it.
		var once sync.Once
		r.mu.Lock()
		r.forwardFn = func(*vspc.Handoff) (net.Conn, error) {
			once.Do(func() { r.mu.Lock(); r.serveHere = true; r.mu.Unlock() })
			return nil, vspc.ErrServeHere
		}
		r.mu.Unlock()
		if _, err := vspctest.Handshake(t.Context(), r.conn(), testVM); err != nil {
			t.Fatalf("handshake after ErrServeHere: %v", err)
		}
		r.mu.Lock()
		opened := r.opened
		r.mu.Unlock()
		if opened != 1 || len(r.srv.Ports()) != 1 || r.srv.Counters().Forwarded != 0 {
			t.Fatalf("relay opened %d backends, has %d ports, counters %+v", opened, len(r.srv.Ports()), r.srv.Counters())
		}
	})
}

// Data a host sends in the same segment as its DO-PROXY and identity,
// and right after, reaches the owner's remote once, in order; data from
// the remote reaches the host. When the host goes, the owner's port
// waits for it (detached); when the owner closes, the host's connection
// ends.
func TestRelayData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipeEnv(t, func(c *vspc.Config) { c.GracePeriod = time.Minute })
		r := newRelay(t, e.srv)
		host := r.conn()
		// One write: ESXi's opening, DO-PROXY, data before its port
		// exists, then (answered only later) the identity and more data.
		var b []byte
		b = telnet.AppendNegotiation(b, telnet.WILL, telnet.Authentication)
		b = telnet.AppendNegotiation(b, telnet.WILL, telnet.VMwareExt)
		b = vspc.AppendExt(b, vspc.DoProxy, []byte{byte(vspc.DirClient)}, []byte("console"))
		b = append(b, "early "...)
		b = vspc.AppendExt(b, vspc.VMVCUUID, []byte(vspctest.SpacedUUID(testVM.VCUUID)))
		b = vspc.AppendExt(b, vspc.VMName, []byte(testVM.Name))
		b = append(b, "after\xff\xff "...) // an escaped 255 in the rest
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := host.Read(buf); err != nil {
					return
				}
			}
		}()
		if _, err := host.Write(b); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if _, err := host.Write([]byte("later")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := string(e.backend(0).received()), "early after\xff later"; got != want {
			t.Fatalf("the owner's remote got %q, want %q", got, want)
		}
		if k := r.kinds(); len(k) != 1 || k[0] != vspc.HandoffProxy {
			t.Fatalf("hand-offs %v", k)
		}
		host.Close()
		synctest.Wait()
		if p := e.port(); p.State != "detached" {
			t.Fatalf("owner's port %+v after the host left: want detached", p)
		}
		if r.srv.Sessions() != 0 || e.srv.Sessions() != 0 {
			t.Fatalf("sessions left: relay %d, owner %d", r.srv.Sessions(), e.srv.Sessions())
		}
	})
}

// A relayed connection is not handed on again: the owner refuses a
// connection whose port it finds served elsewhere.
func TestHandoffNotHandedOnAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		other := vspc.NewServer(vspc.Config{Logger: testLogger(t)})
		defer other.Close()
		owner := newRelay(t, other) // its Bridger says "elsewhere" too
		r := newRelay(t, owner.srv)
		if _, err := vspctest.Handshake(t.Context(), r.conn(), testVM); !errors.Is(err, vspctest.ErrWontProxy) {
			t.Fatalf("handshake: %v, want WONT-PROXY", err)
		}
		if len(owner.kinds()) != 0 || other.Counters().HandedIn != 0 {
			t.Fatal("a handed-over connection was handed on again")
		}
	})
}

func TestParseHandoff(t *testing.T) {
	var o telnet.Options
	o.Enable(nil, telnet.Local, telnet.Binary)
	good := vspc.Handoff{Kind: vspc.HandoffProxy, Host: "10.0.0.1:4242", Telnet: o.AppendState(nil), Direction: "C", ServiceURI: "console",
		VCUUID: testVM.VCUUID, KnownSent: true, Known: []byte{0, 1}}
	enc := func(h vspc.Handoff) []byte {
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if h, err := vspc.ParseHandoff(enc(good)); err != nil || h.Port() != vspc.PortKeyOf(testVM.VCUUID, "", "console") {
		t.Fatalf("good hand-off: %v %+v", err, h)
	}
	peer := vspc.Handoff{Kind: vspc.HandoffPeer, Telnet: o.AppendState(nil), Payload: []byte{1, 2, 3, 4, 5}}
	if _, err := vspc.ParseHandoff(enc(peer)); err != nil {
		t.Fatalf("good PEER hand-off: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(h *vspc.Handoff)
		want string
	}{
		{"kind", func(h *vspc.Handoff) { h.Kind = "attach" }, `kind "attach"`},
		{"telnet", func(h *vspc.Handoff) { h.Telnet = []byte{9} }, "telnet state"},
		{"telnet rest", func(h *vspc.Handoff) { h.Telnet = append(h.Telnet, 0) }, "after the telnet state"},
		{"direction", func(h *vspc.Handoff) { h.Direction = "X" }, "DO-PROXY"},
		{"service", func(h *vspc.Handoff) { h.ServiceURI = "a\nb" }, "DO-PROXY"},
		{"uuid", func(h *vspc.Handoff) { h.VCUUID = "nope" }, "not normalised"},
		{"pending", func(h *vspc.Handoff) { h.Pending = make([]byte, 1<<20) }, "pending data"},
		{"known", func(h *vspc.Handoff) { h.KnownSent = false }, "not sent"},
		{"asked", func(h *vspc.Handoff) { h.Asked = 0x80 }, "asked set"},
		{"proxy with payload", func(h *vspc.Handoff) { h.Payload = []byte{1, 2} }, "PEER payload"},
		{"peer with DO-PROXY", func(h *vspc.Handoff) { h.Kind = vspc.HandoffPeer; h.Payload = []byte{1, 2} }, "PEER with a DO-PROXY"},
		{"peer without payload", func(h *vspc.Handoff) { h.Kind = vspc.HandoffPeer; h.Direction, h.ServiceURI = "", "" }, "PEER payload of 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := good
			h.Telnet = bytes.Clone(good.Telnet)
			tc.mod(&h)
			_, err := vspc.ParseHandoff(enc(h))
			if !errors.Is(err, vspc.ErrBadHandoff) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrBadHandoff saying %q", err, tc.want)
			}
		})
	}
	if _, err := vspc.ParseHandoff([]byte("{")); !errors.Is(err, vspc.ErrBadHandoff) {
		t.Fatalf("broken JSON: %v", err)
	}
}

// FuzzHandoff: ParseHandoff never panics, and what it accepts marshals
// and parses again to the same thing.
func FuzzHandoff(f *testing.F) {
	var o telnet.Options
	o.Enable(nil, telnet.Local, telnet.Binary)
	for _, h := range []vspc.Handoff{
		{Kind: vspc.HandoffProxy, Host: "10.0.0.1:1", Telnet: o.AppendState(nil), Direction: "S", ServiceURI: "vSPC.py", VMName: "vm-00000", Pending: []byte("x")},
		{Kind: vspc.HandoffPeer, Telnet: o.AppendState(nil), Payload: []byte{0x44, 0xda, 0x87, 0xf1, 1, 2, 3, 4}, KnownSent: true},
	} {
		b, _ := json.Marshal(h)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := vspc.ParseHandoff(in)
		if err != nil {
			return
		}
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := vspc.ParseHandoff(b)
		if err != nil {
			t.Fatalf("re-marshalled hand-off refused: %v\n%s", err, b)
		}
		b2, _ := json.Marshal(h2)
		if !bytes.Equal(b, b2) {
			t.Fatalf("not stable:\n%s\n%s", b, b2)
		}
	})
}

// A relay whose owner stops reading holds the host back (nothing is
// buffered beyond its buffer), and closing the relay's server ends it.
func TestRelayBackPressureAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipeEnv(t, nil)
		r := newRelay(t, e.srv)
		var far net.Conn
		r.forwardFn = func(*vspc.Handoff) (net.Conn, error) {
			near, f := net.Pipe()
			far = f
			// The owner answers WILL-PROXY, then reads nothing more.
			go f.Write(vspc.AppendExt(nil, vspc.WillProxy))
			return near, nil
		}
		c, err := vspctest.Handshake(t.Context(), r.conn(), testVM)
		if err != nil {
			t.Fatal(err)
		}
		wrote := make(chan error, 1)
		go func() {
			_, err := c.Write(make([]byte, 1<<20))
			wrote <- err
		}()
		synctest.Wait()
		select {
		case err := <-wrote:
			t.Fatalf("the host wrote 1 MiB to an owner that reads nothing (%v)", err)
		default:
		}
		r.srv.Close()
		if err := <-wrote; err == nil {
			t.Fatal("the host's write succeeded after the relay closed")
		}
		far.Close()
	})
}
