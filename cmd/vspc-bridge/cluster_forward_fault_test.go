package main

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// Fault tests of forwarding (active/active, VSPC_HEAVY=1): three bridge
// processes, each member's link reachable through a proxy the test can
// cut, the balancer steered per connection.

// kill9 stops member i as a crash would, and takes it out of the
// balancer's rotation (a failed health check).
func (w *haWorld) kill9(i int) {
	w.members[i].cmd.Process.Kill()
	<-w.members[i].done
	w.bal.SetDown(i, true)
}

func (p *bridgeProc) counters() admin.ClusterCounters {
	if cl := p.cluster(); cl != nil {
		return cl.Counters
	}
	return admin.ClusterCounters{}
}

func (w *haWorld) ctx() context.Context {
	ctx, cancel := context.WithTimeout(w.t.Context(), testwait.Timeout)
	w.t.Cleanup(cancel)
	return ctx
}

// The owner dies between GOAHEAD and PEER, and the destination's PEER
// (ESXi sends it about a second after GOAHEAD) reaches a survivor before
// the dead owner's lease has ended: the survivor holds the PEER until the
// lease ends, then takes the hand-over over and answers PEER-OK. A real
// ESXi sends one PEER: refusing it would fail the vMotion.
func TestClusterFaultPeerBeforeLeaseEnds(t *testing.T) {
	w := newHAWorld(t)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	seq := []byte{0x44, 0xda, 0x87, 0xf1}
	secret, err := w.port.Conn().Begin(w.ctx(), seq)
	if err != nil {
		t.Fatal(err)
	}
	w.kill9(0)
	w.bal.Send(1)
	killed := time.Now()
	dst, err := vspctest.DialPeer(w.ctx(), w.bal.Addr(), w.vm, seq, secret)
	if err != nil {
		t.Fatalf("PEER at m2 right after m1 died: %v (a refused PEER is a failed vMotion)", err)
	}
	defer dst.Close()
	held := time.Since(killed)
	if err := dst.Complete(seq); err != nil {
		t.Fatal(err)
	}
	echoOn(t, dst, "via m2 after the takeover")
	c := w.members[1].counters()
	if c.Takeovers != 1 || c.Held != 1 || c.HoldFailed != 0 {
		t.Errorf("m2's counters %+v: want 1 takeover after 1 hold", c)
	}
	if _, maxOpen, _ := w.dev.stats(); maxOpen != 1 {
		t.Errorf("the device had %d connections at once, want 1", maxOpen)
	}
	t.Logf("PEER held %v after kill -9 of its hand-over's member (lease 4s), then PEER-OK", held.Round(time.Millisecond))
}

// The owner dies after PEER-OK (its PEER came through m2) and before
// COMPLETE: m2's relay drops the destination's connection (a clean
// failure: the vMotion cannot complete), the source's connection is gone
// too, and the leader reconnects the port through vCenter; the VM lands
// on m2, which claims the port. Never two connections to the device.
func TestClusterFaultKillAfterPeerOK(t *testing.T) {
	w := newHAWorld(t)
	toggles := w.vc.followToggles(t, w.port)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	seq := []byte{0x76, 0x19, 0xff, 0xe9}
	secret, err := w.port.Conn().Begin(w.ctx(), seq)
	if err != nil {
		t.Fatal(err)
	}
	w.bal.Send(1)
	dst, err := vspctest.DialPeer(w.ctx(), w.bal.Addr(), w.vm, seq, secret)
	if err != nil {
		t.Fatalf("PEER through m2: %v", err)
	}
	defer dst.Close()
	w.kill9(0)
	if !dst.WaitClosed(testwait.Timeout) {
		t.Fatal("the destination's connection (relayed by m2) stayed open after its owner died")
	}
	testwait.For(t, "the source connection to drop", func() bool { return w.port.Conn() == nil })
	w.echo("via m2 after a vCenter reconnect")
	testwait.For(t, "m2 to hold the port", func() bool { return w.holder(0) == "m2" })
	if n := toggles(); n != 1 {
		t.Errorf("vCenter toggled the port %d times, want 1", n)
	}
	if _, maxOpen, _ := w.dev.stats(); maxOpen != 1 {
		t.Errorf("the device had %d connections at once, want 1", maxOpen)
	}
	// The dead member's hand-over cannot be finished any more: a replayed
	// PEER finds the port moved on.
	if c, err := vspctest.DialPeer(w.ctx(), w.bal.Addr(), w.vm, seq, secret); err == nil {
		c.Close()
		t.Error("a PEER of the dead member's hand-over was accepted after the port moved on")
	}
}

// The member relaying a PEER dies between PEER-OK and COMPLETE while the
// owner lives: the destination's connection drops (the vMotion cannot
// complete), the source host resumes the VM and sends ABORT on its own
// connection, which the owner never let go: the session goes on there,
// byte-exact (an echo through the device reads back exactly what was
// sent, nothing more), the device is never reopened, and the dead
// hand-over cannot be finished by a replayed PEER.
func TestClusterFaultKillPeerRelay(t *testing.T) {
	w := newHAWorld(t)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	src := w.port.Conn()
	seq := []byte{0x31, 0x07, 0xc4, 0x5e}
	secret, err := src.Begin(w.ctx(), seq)
	if err != nil {
		t.Fatal(err)
	}
	w.bal.Send(1)
	dst, err := vspctest.DialPeer(w.ctx(), w.bal.Addr(), w.vm, seq, secret)
	if err != nil {
		t.Fatalf("PEER through m2: %v", err)
	}
	defer dst.Close()
	// The source host goes on writing between PEER-OK and the relay's
	// death (the VM runs on it until the switch-over).
	during := "written between PEER-OK and the relay's death\n"
	if _, err := src.Write([]byte(during)); err != nil {
		t.Fatal(err)
	}
	w.kill9(1)
	killed := time.Now()
	if !dst.WaitClosed(testwait.Timeout) {
		t.Fatal("the destination's connection stayed open after its relay died")
	}
	if err := src.Abort(); err != nil {
		t.Fatal(err)
	}
	// The device echoed those bytes to the owner while the hand-over was
	// pending; they reach the source exactly once, before the next echo.
	got := make([]byte, len(during))
	if _, err := io.ReadFull(src, got); err != nil || string(got) != during {
		t.Fatalf("the bytes written during the hand-over came back as %q (%v), want them once", got, err)
	}
	echoOn(t, src, "via m1 after the ABORT")
	back := time.Since(killed)
	if c := w.port.Conn(); c != src {
		t.Error("the source connection was replaced: the owner dropped it")
	}
	if h := w.holder(1); h != "m1" {
		t.Errorf("the port is held by %q, want m1", h)
	}
	if _, maxOpen, total := w.dev.stats(); maxOpen != 1 || total != 1 {
		t.Errorf("device connections: %d at once, %d in all; want 1 and 1", maxOpen, total)
	}
	w.bal.Send(2)
	if c, err := vspctest.DialPeer(w.ctx(), w.bal.Addr(), w.vm, seq, secret); err == nil {
		c.Close()
		t.Error("a PEER of the aborted hand-over was accepted")
	}
	echoOn(t, src, "via m1 after the replayed PEER")
	t.Logf("session back on the source %v after the relay died (ABORT sent at once)", back.Round(time.Microsecond))
}

// The member relaying a VM connection to its port's owner dies: for the
// host it is a dropped connection like any other, and for the owner's
// port too (it waits out its grace period). The host dials again, lands
// on another member, and is carried to the same port: the device was
// never closed.
func TestClusterFaultKillRelay(t *testing.T) {
	w := newHAWorldWith(t, haOptions{grace: "1m", mode: vspctest.DropRetry})
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	first := w.port.Conn()
	w.bal.Send(1)
	w.port.Reconnect()
	testwait.For(t, "the VM to reconnect through m2", func() bool { c := w.port.Conn(); return c != nil && c != first })
	w.echo("via m2 to m1")
	if c := w.members[1].counters(); c.Forwarded != 1 {
		t.Fatalf("m2's counters %+v: want the connection forwarded", c)
	}
	relayed := w.port.Conn()
	w.bal.Send(2)
	w.kill9(1)
	testwait.For(t, "the VM to come back through m3", func() bool { c := w.port.Conn(); return c != nil && c != relayed })
	w.echo("via m3 to m1, after the relay died")
	if _, _, total := w.dev.stats(); total != 1 {
		t.Errorf("%d device connections, want 1: the owner kept its device through the relay's death", total)
	}
	ctx := w.ctx()
	ss, err := (&admin.Client{Base: w.members[0].admin}).Sessions(ctx, w.vm.Name)
	if err != nil || len(ss.Sessions) != 1 || ss.Sessions[0].Via != "m3" || ss.Sessions[0].State != "attached" {
		t.Errorf("m1's session: %+v %v, want it attached through m3", ss.Sessions, err)
	}
}

// The member relaying a VM connection to its port's owner dies, and the
// host does not dial again by itself (as ESXi most likely does not). The
// owner lives and waits for its VM within its grace period, so the
// leader's sweep (dead owners' ports) does not see it: the owner itself,
// once the relay's lease ended and the port is still detached after
// reconnect_grace, reconnects it through vCenter. The VM comes back
// through a third member to the same port; the device is never closed.
func TestClusterFaultKillRelayHostStays(t *testing.T) {
	w := newHAWorldWith(t, haOptions{grace: "1m"})
	toggles := w.vc.followToggles(t, w.port)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	first := w.port.Conn()
	w.bal.Send(1)
	w.port.Reconnect()
	testwait.For(t, "the VM to reconnect through m2", func() bool { c := w.port.Conn(); return c != nil && c != first })
	w.echo("via m2 to m1")
	relayed := w.port.Conn()
	w.bal.Send(2)
	killed := time.Now()
	w.kill9(1)
	testwait.For(t, "the VM's connection to drop", func() bool { return w.port.Conn() != relayed })
	w.echo("via m3 to m1, after m1 reconnected the port through vCenter")
	back := time.Since(killed)
	if n := toggles(); n != 1 {
		t.Errorf("vCenter toggled the port %d times, want 1", n)
	}
	if _, _, total := w.dev.stats(); total != 1 {
		t.Errorf("%d device connections, want 1: the owner kept its device", total)
	}
	if h := w.holder(1); h != "m1" {
		t.Errorf("the port is held by %q, want m1", h)
	}
	testwait.For(t, "m1's reconnect counts", func() bool {
		cl := w.members[0].cluster()
		return cl != nil && cl.Counters.Toggled == 1 && cl.Counters.Reconnected == 1
	})
	t.Logf("VM back through a third member %v after kill -9 of its relay (its lease 4s; reconnect_grace 2s from the drop)", back.Round(time.Millisecond))
}

// A keepalived VIP moves away from the port's owner, which stays alive:
// the VM's connection to it ends in a reset (a network fault, not a clean
// close by the host), and the host does not dial again by itself. The
// leader's sweep does not see the port (its owner lives) and no relay
// died: the owner itself, once the port is still detached
// reconnect_grace after the reset, reconnects it through vCenter. The VM
// comes back through the VIP's new holder to the same port on the owner;
// the device is never closed.
func TestClusterFaultVIPMovesHostStays(t *testing.T) {
	w := newHAWorldWith(t, haOptions{grace: "1m"})
	toggles := w.vc.followToggles(t, w.port)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	first := w.port.Conn()
	moved := time.Now()
	w.bal.Send(1) // the VIP moves to m2
	w.bal.Reset(0)
	testwait.For(t, "the VM's connection to drop", func() bool { return w.port.Conn() != first })
	w.echo("via m2 to m1, after m1 reconnected the port through vCenter")
	back := time.Since(moved)
	if n := toggles(); n != 1 {
		t.Errorf("vCenter toggled the port %d times, want 1", n)
	}
	if _, _, total := w.dev.stats(); total != 1 {
		t.Errorf("%d device connections, want 1: the owner kept its device", total)
	}
	if h := w.holder(-1); h != "m1" {
		t.Errorf("the port is held by %q, want m1", h)
	}
	testwait.For(t, "m1's reconnect counts", func() bool {
		cl := w.members[0].cluster()
		return cl != nil && cl.Counters.Toggled == 1 && cl.Counters.Reconnected == 1
	})
	t.Logf("VM back through the VIP's new holder %v after the VIP moved and reset its connection (reconnect_grace 2s from the drop)", back.Round(time.Millisecond))
}

// The member link to the owner is cut (a blackhole: sockets open, no
// bytes). A DO-PROXY and a PEER reaching another member are held for
// owner_wait, then refused (WONT-PROXY; the PEER's connection closed: the
// vMotion fails and the VM resumes on its source with ABORT). Nobody else
// takes the port: the owner is alive and holds it. When the link is back,
// connections are carried to the owner again.
func TestClusterFaultLinkCut(t *testing.T) {
	w := newHAWorldWith(t, haOptions{cluster: `owner_wait = "3s"`})
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	src := w.port.Conn()
	w.links[0].Cut()
	w.bal.Send(1)
	start := time.Now()
	if c, err := vspctest.Dial(w.ctx(), w.bal.Addr(), w.vm); !errors.Is(err, vspctest.ErrWontProxy) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("DO-PROXY at m2 with m1's link cut: %v, want WONT-PROXY after owner_wait", err)
	}
	if d := time.Since(start); d < 3*time.Second {
		t.Errorf("WONT-PROXY after %v, before owner_wait (3s)", d)
	}
	echoOn(t, src, "on the source, link cut")
	seq := []byte{1, 2, 3, 4}
	secret, err := src.Begin(w.ctx(), seq)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := vspctest.DialPeer(w.ctx(), w.bal.Addr(), w.vm, seq, secret); err == nil {
		c.Close()
		t.Fatal("PEER-OK with the owner's link cut")
	}
	if err := src.Abort(); err != nil {
		t.Fatal(err)
	}
	echoOn(t, src, "on the source after ABORT")
	if c := w.members[1].counters(); c.HoldFailed != 2 || c.Takeovers != 0 {
		t.Errorf("m2's counters %+v: want 2 holds given up, no takeover", c)
	}
	if h := w.holder(-1); h != "m1" {
		t.Errorf("the port is held by %q, want m1", h)
	}
	w.links[0].Restore()
	c, err := vspctest.Dial(w.ctx(), w.bal.Addr(), w.vm)
	if err != nil {
		t.Fatalf("DO-PROXY at m2 with the link back: %v", err)
	}
	defer c.Close()
	echoOn(t, c, "via m2 to m1, link back")
	if _, maxOpen, total := w.dev.stats(); maxOpen != 1 || total != 1 {
		t.Errorf("device: %d connections at once, %d in all; want 1 and 1", maxOpen, total)
	}
}

// Loss of the etcd leader under bridge processes: sessions carry on, no
// member fences or loses its lease, nothing changes hands, and a vMotion
// begun after the election (published in etcd) completes through another
// member.
func TestClusterFaultEtcdLeaderLoss(t *testing.T) {
	w := newHAWorld(t)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	lead := w.etcd.Leader()
	if lead < 0 {
		t.Fatal("no etcd leader")
	}
	w.etcd.Kill(lead)
	w.echo("via m1, etcd leader gone")
	testwait.For(t, "a new etcd leader", func() bool { return w.etcd.Leader() >= 0 })
	seq := []byte{9, 8, 7, 6}
	src := w.port.Conn()
	secret, err := src.Begin(w.ctx(), seq)
	if err != nil {
		t.Fatalf("BEGIN after the election: %v", err)
	}
	w.bal.Send(2)
	dst, err := vspctest.DialPeer(w.ctx(), w.bal.Addr(), w.vm, seq, secret)
	if err != nil {
		t.Fatalf("PEER through m3: %v", err)
	}
	defer dst.Close()
	if err := dst.Complete(seq); err != nil {
		t.Fatal(err)
	}
	echoOn(t, dst, "after the vMotion")
	for i, p := range w.members {
		if c := p.counters(); c.LeaseLosses != 0 || c.Fences != 0 || c.ClaimsLost != 0 {
			t.Errorf("m%d's counters %+v: the leader's loss cost a lease or a fence", i+1, c)
		}
	}
	if h := w.holder(-1); h != "m1" {
		t.Errorf("the port is held by %q, want m1", h)
	}
	if _, _, total := w.dev.stats(); total != 1 {
		t.Errorf("%d device connections, want 1", total)
	}
}

// Loss of etcd quorum under bridge processes: the session and its device
// carry on past the lease (the members confirm to each other over the
// link that etcd is down for all: the failsafe), VMOTION-BEGIN gets
// NOTNOW, a new port waits and is refused; when quorum is back the
// members renew without conflict and vMotion works again.
func TestClusterFaultEtcdQuorumLoss(t *testing.T) {
	w := newHAWorld(t)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	var wg sync.WaitGroup
	for _, i := range []int{1, 2} {
		wg.Go(func() { w.etcd.Kill(i) })
	}
	wg.Wait()
	testwait.For(t, "m1's failsafe to hold", func() bool { cl := w.members[0].cluster(); return cl != nil && cl.Failsafe })
	w.echo("via m1 without etcd")
	if _, err := w.port.Conn().Begin(w.ctx(), []byte{1, 1, 1, 1}); !errors.Is(err, vspctest.ErrNotNow) {
		t.Fatalf("BEGIN without etcd: %v, want NOTNOW", err)
	}
	other := vspctest.VM{Name: "vm-new", VCUUID: "50000000-0000-4000-8000-00000000beef", Direction: w.vm.Direction, ServiceURI: "console"}
	w.bal.Send(1)
	if c, err := vspctest.Dial(w.ctx(), w.bal.Addr(), other); !errors.Is(err, vspctest.ErrWontProxy) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a new port without etcd: %v, want WONT-PROXY", err)
	}
	w.bal.Send(0)
	errs := make([]error, 2)
	for k, i := range []int{1, 2} {
		wg.Go(func() { errs[k] = w.etcd.Restart(i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, "every member healthy again", func() bool {
		for _, p := range w.members {
			cl := p.cluster()
			if cl == nil || !cl.Healthy || cl.Failsafe || cl.Fenced {
				return false
			}
		}
		return true
	})
	secret, err := w.port.Conn().Begin(w.ctx(), []byte{2, 2, 2, 2})
	if err != nil || len(secret) == 0 {
		t.Fatalf("BEGIN with etcd back: %v", err)
	}
	if err := w.port.Conn().Abort(); err != nil {
		t.Fatal(err)
	}
	w.echo("via m1 with etcd back")
	if h := w.holder(-1); h != "m1" {
		t.Errorf("the port is held by %q, want m1", h)
	}
	if _, _, total := w.dev.stats(); total != 1 {
		t.Errorf("%d device connections, want 1: the device stayed open through the outage", total)
	}
	if c := w.members[0].counters(); c.FailsafeHolds < 1 || c.Fences != 0 {
		t.Errorf("m1's counters %+v: want a failsafe hold and no fence", c)
	}
}

// A member cut from etcd (blackhole proxies: sockets open, no bytes)
// while the others reach it: its lease lapses on its own clock, the
// failsafe does not hold (the others answer over the link that they reach
// etcd), its one quick renewal fails, and it closes its device. The VM's
// connection stays (the member is alive). When etcd is back the member
// takes a new lease and claims the port and the device again (nobody took
// them): the session goes on. Never two device connections at once.
func TestClusterFaultMemberCutFromEtcd(t *testing.T) {
	w := newHAWorldWith(t, haOptions{etcdVia: true})
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	for _, p := range w.etcdVia[0] {
		p.Cut()
	}
	testwait.For(t, "m1 to fence", func() bool { cl := w.members[0].cluster(); return cl != nil && cl.Fenced })
	testwait.For(t, "m1 to close its device connection", func() bool { open, _, _ := w.dev.stats(); return open == 0 })
	if w.port.Conn() == nil {
		t.Fatal("the VM's connection to m1 dropped while m1 was only cut from etcd")
	}
	for _, p := range w.etcdVia[0] {
		p.Restore()
	}
	testwait.For(t, "m1 healthy again", func() bool {
		cl := w.members[0].cluster()
		return cl != nil && cl.Healthy && !cl.Fenced
	})
	w.echo("via m1 with etcd back")
	if h := w.holder(-1); h != "m1" {
		t.Errorf("the port is held by %q, want m1", h)
	}
	if _, maxOpen, total := w.dev.stats(); maxOpen != 1 || total != 2 {
		t.Errorf("device: %d connections at once, %d in all; want 1 and 2 (closed when fenced, opened again)", maxOpen, total)
	}
	if c := w.members[0].counters(); c.Fences < 1 || c.FailsafeHolds != 0 {
		t.Errorf("m1's counters %+v: want a fence and no failsafe hold", c)
	}
}

// A member stops cleanly (SIGTERM: a rolling upgrade) with a VM connected
// whose host does not dial again by itself: the member releases the port
// as attached (it dropped the VM; the VM did not leave), so the leader
// reconnects it through vCenter after reconnect_grace and the VM lands on
// the new VIP holder, which claims port and device at once (a clean
// release: no lock delay).
func TestClusterFaultLeave(t *testing.T) {
	w := newHAWorld(t)
	toggles := w.vc.followToggles(t, w.port)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	stopped := time.Now()
	w.members[0].cmd.Process.Signal(syscall.SIGTERM)
	<-w.members[0].done
	w.bal.Send(1) // keepalived moves the VIP to m2
	testwait.For(t, "the VM connection to drop", func() bool { return w.port.Conn() == nil })
	w.echo("via m2 after a vCenter reconnect")
	back := time.Since(stopped)
	testwait.For(t, "m2 to hold the port", func() bool { return w.holder(0) == "m2" })
	if n := toggles(); n != 1 {
		t.Errorf("vCenter toggled the port %d times, want 1", n)
	}
	if _, maxOpen, total := w.dev.stats(); maxOpen != 1 || total != 2 {
		t.Errorf("device: %d connections at once, %d in all; want 1 and 2", maxOpen, total)
	}
	for _, p := range w.members[1:] {
		if c := p.counters(); c.LockDelays != 0 {
			t.Errorf("%s waited a lock delay after a clean leave: %+v", p.name, c)
		}
	}
	t.Logf("VM serial port back on m2 %v after m1 stopped cleanly (reconnect_grace 2s; no lease to wait for)", back.Round(time.Millisecond))
}

// The owner dies while the host waits for its answer to VMOTION-BEGIN
// (held here: the owner's etcd is cut, so publishing the hand-over waits
// up to etcd_timeout, 2.5 s; the kill comes at once). The host sees its
// connection drop without GOAHEAD: the vMotion fails on the source and the VM stays there; no
// PEER can ever come (the secret travels only in GOAHEAD). The leader
// reconnects the port through vCenter after the lease; the VM lands on
// m2. Never two device connections.
func TestClusterFaultKillDuringBegin(t *testing.T) {
	w := newHAWorldWith(t, haOptions{etcdVia: true, cluster: `etcd_timeout = "2.5s"`})
	toggles := w.vc.followToggles(t, w.port)
	w.echo("via m1")
	testwait.For(t, "m1 to hold the port", func() bool { return w.holder(-1) == "m1" })
	for _, p := range w.etcdVia[0] {
		p.Cut()
	}
	src := w.port.Conn()
	begun := make(chan error, 1)
	go func() {
		_, err := src.Begin(w.ctx(), []byte{5, 6, 7, 8})
		begun <- err
	}()
	w.kill9(0)
	w.bal.Send(1)
	if err := <-begun; err == nil || errors.Is(err, vspctest.ErrNotNow) {
		t.Fatalf("BEGIN with its owner killed: %v, want the connection gone without an answer", err)
	}
	w.echo("via m2 after a vCenter reconnect")
	testwait.For(t, "m2 to hold the port", func() bool { return w.holder(0) == "m2" })
	if n := toggles(); n != 1 {
		t.Errorf("vCenter toggled the port %d times, want 1", n)
	}
	if _, maxOpen, _ := w.dev.stats(); maxOpen != 1 {
		t.Errorf("the device had %d connections at once, want 1", maxOpen)
	}
}
