package vspc_test

import (
	"net"
	"sync"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// dropLog is a vspc.Drops that records what it is told.
type dropLog struct {
	mu  sync.Mutex
	got map[string][]bool // VM name → abnormal, per drop
}

func (d *dropLog) Dropped(req vspc.Request, abnormal bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.got == nil {
		d.got = map[string][]bool{}
	}
	d.got[req.VMName] = append(d.got[req.VMName], abnormal)
}

func (d *dropLog) of(name string) []bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]bool(nil), d.got[name]...)
}

// A VM connection that the host resets is an abnormal drop; one the host
// closes cleanly (a FIN: ESXi's way when the VM powers off or its serial
// port is disconnected) is not; the server's own shutdown tells nothing.
func TestDropsTellResetFromCleanClose(t *testing.T) {
	drops := &dropLog{}
	e := newEnv(t, allowLoopback, func(c *vspc.Config) { c.Drops = drops })
	dial := func(i int) (*vspctest.Conn, *net.TCPConn) {
		raddr, conns := rawRemote(t) // a device is one VM's at a time
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		vm, err := vspctest.Handshake(t.Context(), nc, vmNamed(i, vspc.DirClient, "tcp://"+raddr))
		if err != nil {
			t.Fatal(err)
		}
		remote := accept(t, conns)
		exchange(t, vm, remote, []byte("to the VM"), []byte("from the VM"))
		return vm, nc.(*net.TCPConn)
	}
	reset, nc := dial(1)
	nc.SetLinger(0) // Close sends RST
	reset.Close()
	testwait.For(t, "the reset to be told", func() bool { return len(drops.of("vm-00001")) == 1 })
	if got := drops.of("vm-00001"); !got[0] {
		t.Errorf("a reset told as %v, want abnormal", got)
	}
	clean, _ := dial(2)
	clean.Close()
	testwait.For(t, "the clean close to be told", func() bool { return len(drops.of("vm-00002")) == 1 })
	if got := drops.of("vm-00002"); got[0] {
		t.Errorf("a clean close told as %v, want not abnormal", got)
	}
	stays, _ := dial(3)
	defer stays.Close()
	e.cancel()
	e.srv.Close()
	if got := drops.of("vm-00003"); len(got) != 0 {
		t.Errorf("the server's shutdown told %v", got)
	}
}
