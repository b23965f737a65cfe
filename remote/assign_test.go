package remote_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// sharedPorts stands in for the cluster's assignment (cluster.Node's
// AssignListener): one map for every hub, the first port of the range
// for a serial port it has not seen that no other one has and that no
// other program on this machine holds right now (the range is near
// ports other tests take: the etcd assignment cannot know them).
type sharedPorts struct {
	mu        sync.Mutex
	byVM      map[vspc.PortKey]int
	fail      error
	reclaimed string // said with the next new assignment (the cluster reclaimed a port for it)
}

func (s *sharedPorts) AssignListener(_ context.Context, key vspc.PortKey, _ string, lo, hi int) (int, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, "", s.fail
	}
	if p, ok := s.byVM[key]; ok {
		return p, "", nil
	}
	for p := lo; p <= hi; p++ {
		taken := false
		for _, q := range s.byVM {
			taken = taken || q == p
		}
		if !taken && bindable(p) {
			s.byVM[key] = p
			r := s.reclaimed
			s.reclaimed = ""
			return p, r, nil
		}
	}
	return 0, "", errors.New("full")
}

func bindable(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// With a cluster assigning port_range, a VM serial port gets the same
// console port on whichever bridge serves it (here: two hubs, one after
// the other), other serial ports get others, and a VM without identity
// falls back to the hub's own state. An assignment that fails refuses
// the port, saying why.
func TestPortAssignerFromCluster(t *testing.T) {
	lo := freePort(t)
	if lo > 65000 {
		lo = 40000
	}
	cfg, err := configs.Parse("test.toml", []byte(fmt.Sprintf(`[vspc]
listen = "127.0.0.1:0"
[remote]
enabled = true
port_range = "%d-%d"
[[user]]
name = "alice"
password = %q
access = [{vm = "*", mode = "rw"}]
`, lo, lo+20, hash(t, alicePW))))
	if err != nil {
		t.Fatal(err)
	}
	shared := &sharedPorts{byVM: map[vspc.PortKey]int{}}
	start := func() *remote.Hub {
		hub, err := remote.New(cfg, devicetest.Logger(t), remote.WithPortAssigner(shared))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hub.Close() })
		return hub
	}
	portOf := func(hub *remote.Hub, vm string) int {
		for _, ci := range hub.Consoles() {
			if ci.VMName == vm {
				return listenPort(t, ci.Listen)
			}
		}
		t.Fatalf("no console for %s", vm)
		return 0
	}
	a := start()
	b1, _ := openConsole(t, a, "web-1", "42100000-0000-0000-0000-0000000000f1", "vSPC.py")
	p1 := portOf(a, "web-1")
	if want := shared.byVM[vspc.PortKeyOf("42100000-0000-0000-0000-0000000000f1", "", "vSPC.py")]; p1 != want {
		t.Fatalf("web-1 listens on %d, the cluster assigned %d", p1, want)
	}
	b1.Close() // the serial port moves to another bridge
	b := start()
	openConsole(t, b, "web-1", "42100000-0000-0000-0000-0000000000f1", "vSPC.py")
	openConsole(t, b, "web-2", "42100000-0000-0000-0000-0000000000f2", "vSPC.py")
	if got := portOf(b, "web-1"); got != p1 {
		t.Fatalf("web-1 on the second bridge listens on %d, was %d", got, p1)
	}
	if p2 := portOf(b, "web-2"); p2 == p1 || p2 < lo || p2 > lo+20 {
		t.Fatalf("web-2 on %d (web-1 %d, range %d-%d)", p2, p1, lo, lo+20)
	}
	// No identity: the hub's own assignment, not the cluster's.
	openConsole(t, b, "", "", "vSPC.py")
	if n := len(shared.byVM); n != 2 {
		t.Fatalf("the cluster assigned %d ports, want 2", n)
	}
	// A console port the cluster cannot give (etcd did not answer), or
	// one another program holds on this host: the console is opened
	// without a per-VM listener (front doors only); the VM's serial port
	// is not refused for it.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	shared.mu.Lock()
	shared.byVM[vspc.PortKeyOf("42100000-0000-0000-0000-0000000000f4", "", "vSPC.py")] = busy.Addr().(*net.TCPAddr).Port
	shared.mu.Unlock()
	openConsole(t, b, "web-4", "42100000-0000-0000-0000-0000000000f4", "vSPC.py")
	shared.mu.Lock()
	shared.fail = errors.New("etcd unreachable")
	shared.mu.Unlock()
	openConsole(t, b, "web-3", "42100000-0000-0000-0000-0000000000f3", "vSPC.py")
	for _, ci := range b.Consoles() {
		if (ci.VMName == "web-3" || ci.VMName == "web-4") && ci.Listen != "" {
			t.Errorf("%s: console listens on %q, want no per-VM listener", ci.VMName, ci.Listen)
		}
	}
	if n := len(b.Consoles()); n != 5 {
		t.Errorf("%d consoles, want 5 (web-1, web-2, the nameless one, web-3, web-4)", n)
	}
}

// A console port the cluster took back for another serial port (the
// range full, the old holder served here while this member was cut off
// from etcd): DropListener closes the console's per-VM listener, the
// console stays open without one, and a port still the console's is left
// alone. A reclaim the cluster reports is logged as the state file's is.
func TestDropListener(t *testing.T) {
	lo := freePort(t)
	if lo > 65000 {
		lo = 40000
	}
	cfg, err := configs.Parse("test.toml", []byte(fmt.Sprintf(`[vspc]
listen = "127.0.0.1:0"
[remote]
enabled = true
open = true
port_range = "%d-%d"
`, lo, lo+20)))
	if err != nil {
		t.Fatal(err)
	}
	shared := &sharedPorts{byVM: map[vspc.PortKey]int{}, reclaimed: "port N reclaimed from VM \"old\""}
	var logs syncBuffer
	hub, err := remote.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), remote.WithPortAssigner(shared))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	const uuid = "42100000-0000-0000-0000-0000000000d1"
	openConsole(t, hub, "web-1", uuid, "vSPC.py")
	if !strings.Contains(logs.String(), `msg="port_range full: port N reclaimed from VM \"old\""`) {
		t.Errorf("no reclaim logged:\n%s", logs.String())
	}
	listen := func() string { return hub.Consoles()[0].Listen }
	port := listenPort(t, listen())
	key := vspc.PortKeyOf(uuid, "web-1", "vSPC.py")
	if hub.DropListener(port, func(k vspc.PortKey) bool { return k == key }) || hub.DropListener(port+1, func(vspc.PortKey) bool { return false }) {
		t.Fatal("dropped a listener whose port is still its console's, or on a port without a console")
	}
	nc, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("the console's port before the drop: %v", err)
	}
	nc.Close()
	if !hub.DropListener(port, func(vspc.PortKey) bool { return false }) {
		t.Fatal("DropListener did not drop the listener")
	}
	if l := listen(); l != "" {
		t.Errorf("console lists %q after its listener was dropped", l)
	}
	if !bindable(port) {
		t.Errorf("port %d still held here after the drop", port)
	}
	if !strings.Contains(logs.String(), "console port given to another VM serial port") {
		t.Errorf("the drop is not logged:\n%s", logs.String())
	}
	if hub.DropListener(port, func(vspc.PortKey) bool { return false }) {
		t.Error("dropped twice")
	}
	// A console whose port came from the state file (a VM without
	// identity) or from its service URI is not the cluster's to take.
	openConsole(t, hub, "", "", "vSPC.py")
	named := freePort(t)
	openConsole(t, hub, "web-2", "42100000-0000-0000-0000-0000000000d2", fmt.Sprintf("telnet://127.0.0.1:%d", named))
	for _, ci := range hub.Consoles() {
		if ci.VMName == "web-1" {
			continue
		}
		if p := listenPort(t, ci.Listen); hub.DropListener(p, func(vspc.PortKey) bool { return false }) {
			t.Errorf("%q: dropped a listener the cluster did not assign (port %d)", ci.VMName, p)
		}
	}
}

// syncBuffer is a log destination safe for the hub's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
