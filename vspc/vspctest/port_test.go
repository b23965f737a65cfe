package vspctest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

func TestMain(m *testing.M) { leaktest.Main(m, 5*time.Second) }

type discard struct{}

func (discard) Open(context.Context, vspc.Request, vspc.Sink) (vspc.Backend, error) {
	return discardBackend{}, nil
}

type discardBackend struct{}

func (discardBackend) Write(p []byte) (int, error) { return len(p), nil }
func (discardBackend) Close() error                { return nil }

// proxy is a vspc server the test can kill and start again elsewhere.
type proxy struct {
	mu   sync.Mutex
	addr string
	srv  *vspc.Server
	wg   sync.WaitGroup
}

func (p *proxy) start(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := vspc.NewServer(vspc.Config{Bridger: discard{}})
	p.mu.Lock()
	p.addr, p.srv = ln.Addr().String(), srv
	p.mu.Unlock()
	p.wg.Go(func() { srv.Serve(context.Background(), ln) })
}

func (p *proxy) kill() {
	p.mu.Lock()
	srv := p.srv
	p.mu.Unlock()
	srv.Close()
	p.wg.Wait()
}

func (p *proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

func runPort(t *testing.T, port *Port) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { port.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func vm() VM {
	return VM{Name: "vm-1", VCUUID: "50000000-0000-0000-0000-000000000001", Direction: vspc.DirClient, ServiceURI: "tcp://127.0.0.1:9"}
}

// DropStay: after its proxy dies the port stays down, even when a proxy
// is back, until it is reconnected (the vCenter toggle).
func TestPortStaysDownAfterDrop(t *testing.T) {
	p := &proxy{}
	p.start(t)
	port := &Port{VM: vm(), Addr: p.Addr, Mode: DropStay}
	runPort(t, port)
	testwait.For(t, "the port to connect", func() bool { return port.Conn() != nil })
	p.kill()
	testwait.For(t, "the drop", func() bool { return port.Conn() == nil })
	p.start(t)
	defer p.kill()
	select {
	case <-port.Changed():
		t.Fatal("a DropStay port changed state without being reconnected")
	case <-time.After(300 * time.Millisecond):
	}
	if dials, drops, _ := port.Stats(); dials != 1 || drops != 1 {
		t.Fatalf("dials %d drops %d, want 1 and 1", dials, drops)
	}
	port.Reconnect()
	testwait.For(t, "the port to come back after Reconnect", func() bool { return port.Conn() != nil })
	if dials, _, _ := port.Stats(); dials != 2 {
		t.Errorf("dials %d, want 2", dials)
	}
}

// DropRetry: the host dials again with backoff until a proxy answers.
func TestPortRetriesAfterDrop(t *testing.T) {
	p := &proxy{}
	p.start(t)
	port := &Port{VM: vm(), Addr: p.Addr, Mode: DropRetry, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	runPort(t, port)
	testwait.For(t, "the port to connect", func() bool { return port.Conn() != nil })
	p.kill()
	testwait.For(t, "failed dials while the proxy is down", func() bool { d, _, err := port.Stats(); return d >= 3 && err != nil })
	p.start(t)
	defer p.kill()
	testwait.For(t, "the port to come back by itself", func() bool { return port.Conn() != nil })
}
