package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// echoConsoles stands in for a remote hub: it records who attached, and
// refuses the state "refuse" (a JSON string); otherwise it echoes the stream.
type echoConsoles struct {
	mu   sync.Mutex
	from []string
}

func (e *echoConsoles) ServeForwarded(ctx context.Context, conn net.Conn, from string, state []byte, accept func(error) error) {
	defer conn.Close()
	if string(state) == `"refuse"` {
		accept(errors.New("remote: no such console"))
		return
	}
	e.mu.Lock()
	e.from = append(e.from, from)
	e.mu.Unlock()
	if accept(nil) != nil {
		return
	}
	io.Copy(conn, conn)
}

// A console stream reaches the member that holds the port, under the
// fence the front door read with ServedPorts (and the listener port etcd
// assigned); the owner's hub answers it. A stale fence, a refusal by the
// hub and a member that is not live are errors that say so.
func TestConsoleStream(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitCerts(CertOptions{Dir: dir, Cluster: "lab", Members: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	var hub echoConsoles
	la := loadLink(t, dir, "lab", "a", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := e.node("a", func(c *Config) { c.Info.Link = ln.Addr().String() })
	fa := &Forwarder{Node: a.Node, Link: la}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		la.Serve(ctx, ln, func(ctx context.Context, s *Stream) {
			if s.Header.Kind == KindConsole {
				fa.ServeConsoleStream(ctx, s, &hub)
				return
			}
			s.Reply(Reply{Err: "unexpected"})
			s.Conn.Close()
		})
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	b, fb := e.forwarding("b", dir, &echoResumer{})
	testwait.For(t, "a and b to see each other", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })

	rec := port(1)
	rec.Direction = "server"
	claim, _, err := a.ClaimPort(ctxT(t), rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.AssignListener(ctxT(t), rec.Port, "vm-1", 7000, 7010); err != nil {
		t.Fatal(err)
	}
	served, err := b.ServedPorts(ctxT(t))
	if err != nil || len(served) != 1 {
		t.Fatalf("ServedPorts: %+v %v", served, err)
	}
	sp := served[0]
	if sp.Record.Member != "a" || sp.Record.Port != rec.Port || sp.Record.Direction != "server" || sp.Fence != claim.Fence() || sp.Listen != 7000 {
		t.Fatalf("served port %+v, want a's claim (fence %d) with listener 7000", sp, claim.Fence())
	}

	c, err := fb.DialConsole(ctxT(t), "a", rec.Port, sp.Fence, []byte(`{"user":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	echoes(t, c, "typed at b's front door")
	c.Close()
	hub.mu.Lock()
	from := append([]string(nil), hub.from...)
	hub.mu.Unlock()
	if len(from) != 1 || from[0] != "b" {
		t.Fatalf("the hub saw streams from %v, want [b] (the member the link's certificate names)", from)
	}

	if _, err := fb.DialConsole(ctxT(t), "a", rec.Port, sp.Fence+1, nil); err == nil || !strings.Contains(err.Error(), "does not hold port") {
		t.Fatalf("stale fence: %v", err)
	}
	if _, err := fb.DialConsole(ctxT(t), "a", rec.Port, sp.Fence, []byte(`"refuse"`)); err == nil || !strings.Contains(err.Error(), "no such console") {
		t.Fatalf("refused by the hub: %v", err)
	}
	if _, err := fb.DialConsole(ctxT(t), "c", rec.Port, sp.Fence, nil); err == nil || !strings.Contains(err.Error(), "not a live member") {
		t.Fatalf("unknown member: %v", err)
	}
}
