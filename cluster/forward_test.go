package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/telnet"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// echoResumer stands in for a vspc server: it records each hand-off and
// echoes the stream's bytes.
type echoResumer struct {
	mu  sync.Mutex
	got []*vspc.Handoff
}

func (r *echoResumer) ServeHandoff(nc net.Conn, h *vspc.Handoff) {
	r.mu.Lock()
	r.got = append(r.got, h)
	r.mu.Unlock()
	defer nc.Close()
	io.Copy(nc, nc)
}

func (r *echoResumer) handoffs() []*vspc.Handoff {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*vspc.Handoff(nil), r.got...)
}

// forwarding starts a node whose member link serves "vm" streams into
// res, and returns its Forwarder.
func (e *env) forwarding(id, certDir string, res Resumer) (*member, *Forwarder) {
	t := e.t
	t.Helper()
	l := loadLink(t, certDir, "lab", id, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := e.node(id, func(c *Config) { c.Info.Link = ln.Addr().String() })
	f := &Forwarder{Node: m.Node, Link: l}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		l.Serve(ctx, ln, func(ctx context.Context, s *Stream) {
			if s.Header.Kind == KindVM {
				f.ServeStream(s, res)
				return
			}
			s.Reply(Reply{Err: "unexpected"})
			s.Conn.Close()
		})
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return m, f
}

func proxyHandoff(p PortRecord) *vspc.Handoff {
	var o telnet.Options
	o.Enable(nil, telnet.Local, telnet.Binary)
	return &vspc.Handoff{Kind: vspc.HandoffProxy, Host: "10.0.0.7:4321", Telnet: o.AppendState(nil), Direction: "C",
		ServiceURI: p.Port.Service, VCUUID: p.Port.VM, VMName: p.VMName}
}

func echoes(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(testwait.Timeout))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo over the stream: %q %v", got, err)
	}
}

// A DO-PROXY for a port another member holds goes to it over the member
// link: the owner gets the hand-off, named as coming from the relay, and
// the stream carries bytes both ways. A stale fence is refused by the
// owner and the relay asks etcd again; a free port is served here; a
// PEER goes to the member holding its hand-over.
func TestForwardOverLink(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitCerts(CertOptions{Dir: dir, Cluster: "lab", Members: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	var ra, rb echoResumer
	a, _ := e.forwarding("a", dir, &ra)
	b, fb := e.forwarding("b", dir, &rb)
	testwait.For(t, "a and b to see each other", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	p := port(1)
	claim, _, err := a.ClaimPort(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	_, owner, err := b.ClaimPort(ctxT(t), p)
	if err != nil || owner == nil {
		t.Fatalf("b's claim: owner %v, %v", owner, err)
	}
	c, err := fb.Forward(ctxT(t), proxyHandoff(p), &OwnerError{Owner: *owner})
	if err != nil {
		t.Fatal(err)
	}
	echoes(t, c, "hello a")
	c.Close()
	if got := ra.handoffs(); len(got) != 1 || got[0].Via != "b" || got[0].Host != "10.0.0.7:4321" || got[0].VCUUID != p.Port.VM {
		t.Fatalf("a's hand-offs %+v", got)
	}

	// A stale owner record (another fence): a refuses it, b reads the
	// owner again and goes on.
	stale := *owner
	stale.Fence--
	c, err = fb.Forward(ctxT(t), proxyHandoff(p), &OwnerError{Owner: stale})
	if err != nil {
		t.Fatal(err)
	}
	echoes(t, c, "again")
	c.Close()
	if len(ra.handoffs()) != 2 {
		t.Fatalf("a resumed %d connections, want 2", len(ra.handoffs()))
	}

	// A PEER for a's hand-over goes to a, carrying its hash.
	payload := []byte{0x44, 0xda, 0x87, 0xf1, 1, 2, 3, 4}
	if err := a.PublishMigration(ctxT(t), PeerHash(payload), Migration{Port: p.Port, SeqLen: 4, Fence: claim.Fence()}, time.Minute); err != nil {
		t.Fatal(err)
	}
	var o telnet.Options
	peer := &vspc.Handoff{Kind: vspc.HandoffPeer, Telnet: o.AppendState(nil), Payload: payload}
	res, err := fb.TakeOver(ctxT(t), peer)
	if err != nil || res.Conn == nil {
		t.Fatalf("PEER: %+v %v", res, err)
	}
	echoes(t, res.Conn, "peer")
	res.Conn.Close()
	// An unknown PEER is refused at once.
	peer.Payload = []byte{9, 9, 9, 9, 9}
	if _, err := fb.TakeOver(ctxT(t), peer); !errors.Is(err, vspc.ErrNoHandOver) {
		t.Fatalf("unknown PEER: %v, want ErrNoHandOver", err)
	}

	// a lets go: the port is b's to serve.
	claim.Release(ctxT(t))
	if _, err := fb.Forward(ctxT(t), proxyHandoff(p), nil); !errors.Is(err, vspc.ErrServeHere) {
		t.Fatalf("free port: %v, want ErrServeHere", err)
	}
	if s := b.Stats(); s.Forwarded != 3 || s.Held != 0 || s.HoldFailed != 0 {
		t.Errorf("b's stats %+v: want 3 forwarded, none held (a stale fence is read again at once)", s)
	}
	if s := a.Stats(); s.HandedIn != 3 {
		t.Errorf("a's stats %+v: want 3 handed in", s)
	}
}

// The hold: an owner that does not answer is asked again until it does,
// the port frees, or owner_wait passes; a final answer ends it at once.
func TestForwardHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &Node{cfg: Config{Member: "b", CallTimeout: time.Second, LeaseTTL: 5 * time.Second}, log: slog.New(slog.DiscardHandler)}
		f := &Forwarder{Node: n}
		alive := &Owner{Record: PortRecord{Member: "a"}}
		port := PortID{VM: "vm", Service: "s"}
		unreachable := errors.New("connection refused")
		refuse := func(context.Context, *Owner) (net.Conn, error) { return nil, unreachable }
		served := errors.New("served here")
		free := func() (net.Conn, error) { return nil, served }

		// The owner's lease ends after a second: the port is free.
		start := time.Now()
		_, err := f.hold(t.Context(), "DO-PROXY", &port, func(context.Context) (*Owner, error) {
			if time.Since(start) < time.Second {
				return alive, nil
			}
			return nil, nil
		}, refuse, free)
		if !errors.Is(err, served) || time.Since(start) < time.Second || time.Since(start) > 1250*time.Millisecond {
			t.Fatalf("hold: %v after %v, want the port served here after 1 s", err, time.Since(start))
		}

		// It never answers: given up after owner_wait (lease TTL + 2 s).
		start = time.Now()
		_, err = f.hold(t.Context(), "DO-PROXY", &port, func(context.Context) (*Owner, error) { return alive, nil }, refuse, free)
		if !errors.Is(err, unreachable) || !strings.Contains(err.Error(), "owner_wait (7s)") || time.Since(start) != 7*time.Second {
			t.Fatalf("hold: %v after %v, want the owner's error after 7 s", err, time.Since(start))
		}

		// A final answer (no such hand-over) is not waited on.
		start = time.Now()
		_, err = f.hold(t.Context(), "VMOTION-PEER", &port, func(context.Context) (*Owner, error) { return nil, vspc.ErrNoHandOver }, refuse, free)
		if !errors.Is(err, vspc.ErrNoHandOver) || time.Since(start) != 0 {
			t.Fatalf("hold: %v after %v, want ErrNoHandOver at once", err, time.Since(start))
		}

		// owner_wait "0s": one attempt.
		f.OwnerWait = -1
		_, err = f.hold(t.Context(), "DO-PROXY", &port, func(context.Context) (*Owner, error) { return alive, nil }, refuse, free)
		if !errors.Is(err, unreachable) || time.Since(start) != 0 {
			t.Fatalf("hold with owner_wait 0s: %v after %v", err, time.Since(start))
		}
		if s := n.Stats(); s.Held != 2 || s.HoldFailed != 1 {
			t.Errorf("stats %+v: want 2 held, 1 given up", s)
		}
	})
}

// stateResumer is an echoResumer that also reports its ports' states, as
// a vspc server does.
type stateResumer struct {
	echoResumer
	mu    sync.Mutex
	ports []vspc.PortInfo
}

func (r *stateResumer) Ports() []vspc.PortInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]vspc.PortInfo(nil), r.ports...)
}

func (r *stateResumer) set(ps ...vspc.PortInfo) {
	r.mu.Lock()
	r.ports = ps
	r.mu.Unlock()
}

// recorder is a Reconnector that records its calls.
type recorder struct {
	mu  sync.Mutex
	got []PortInfo
}

func (r *recorder) Reconnect(_ context.Context, p PortInfo) error {
	r.mu.Lock()
	r.got = append(r.got, p)
	r.mu.Unlock()
	return nil
}

func (r *recorder) calls() []PortInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]PortInfo(nil), r.got...)
}

// A VM connection another member relayed here ends, and the relay leaves
// the cluster: the port (this member's, waiting for its VM) is still
// detached a grace after the drop, so its owner reconnects it through
// vCenter, once (the leader's sweep looks only at ports whose owner
// died). A port whose VM is back is left alone.
func TestRelayGoneReconnects(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitCerts(CertOptions{Dir: dir, Cluster: "lab", Members: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	var ra stateResumer
	var rb echoResumer
	a, _ := e.forwarding("a", dir, &ra)
	b, fb := e.forwarding("b", dir, &rb)
	rec := &recorder{}
	a.StartSweep(SweepConfig{Grace: 200 * time.Millisecond, Reconnector: rec})
	testwait.For(t, "a and b to see each other", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	p, back := port(1), port(2)
	for _, r := range []PortRecord{p, back} {
		if _, _, err := a.ClaimPort(ctxT(t), r); err != nil {
			t.Fatal(err)
		}
	}
	info := func(r PortRecord, state string) vspc.PortInfo {
		return vspc.PortInfo{VMName: r.VMName, VCUUID: r.Port.VM, ServiceURI: r.Port.Service, State: state}
	}
	ra.set(info(p, "detached"), info(back, "attached"))
	var conns []net.Conn
	for _, r := range []PortRecord{p, back} {
		_, owner, err := b.ClaimPort(ctxT(t), r)
		if err != nil || owner == nil {
			t.Fatalf("b's claim of %s: owner %v, %v", r.Port, owner, err)
		}
		c, err := fb.Forward(ctxT(t), proxyHandoff(r), &OwnerError{Owner: *owner})
		if err != nil {
			t.Fatal(err)
		}
		echoes(t, c, "via b")
		conns = append(conns, c)
	}
	// b leaves; the connections it relayed end with it.
	if err := b.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		c.Close()
	}
	testwait.For(t, "a to reconnect the detached port", func() bool { return a.SweepStats().Toggled == 1 })
	if got := rec.calls(); len(got) != 1 || got[0].Port != p.Port || got[0].Member != "a" || got[0].VMName != p.VMName {
		t.Fatalf("reconnects %+v, want one of %s", got, p.Port)
	}
	ra.set(info(p, "attached"), info(back, "attached"))
	testwait.For(t, "the reconnected port timed back", func() bool { return a.SweepStats().Reconnected == 1 })
}
