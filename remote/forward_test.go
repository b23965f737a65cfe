package remote_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/remote/remotetest"
)

// memberLink stands in for the cluster (package cluster's member link is
// tested with it in cmd/vspc-bridge): the front door's hub lists the
// owner hub's consoles and opens console streams to it over loopback
// TCP, with a length-prefixed request and a one-frame answer, as the
// member link does after its TLS handshake. Its socket buffers are small,
// as the member link's console streams' are.
type memberLink struct {
	t      testing.TB
	from   string // the front door's member id, as the owner sees it
	member string // the owner's member id
	ln     net.Listener
	mu     sync.Mutex
	owner  *remote.Hub
	broken bool // refuse to list (etcd unreachable)
	frozen bool // answer streams yes, then nothing more (a stopped owner)
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newMemberLink(t testing.TB, from, member string) *memberLink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &memberLink{t: t, from: from, member: member, ln: ln}
	ctx, cancel := context.WithCancel(context.Background())
	m.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.mu.Lock()
			m.conns = append(m.conns, c)
			owner, frozen := m.owner, m.frozen
			m.mu.Unlock()
			smallBuffers(c)
			m.wg.Go(func() {
				var n [4]byte
				if _, err := io.ReadFull(c, n[:]); err != nil {
					c.Close()
					return
				}
				state := make([]byte, binary.BigEndian.Uint32(n[:]))
				if _, err := io.ReadFull(c, state); err != nil {
					c.Close()
					return
				}
				if frozen {
					c.Write(make([]byte, 4)) // yes
					<-ctx.Done()
					return
				}
				owner.ServeForwarded(ctx, c, m.from, state, func(err error) error {
					msg := ""
					if err != nil {
						msg = err.Error()
					}
					_, werr := c.Write(binary.BigEndian.AppendUint32(nil, uint32(len(msg))))
					if werr == nil {
						_, werr = c.Write([]byte(msg))
					}
					return werr
				})
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		m.cut()
		m.wg.Wait()
	})
	return m
}

func smallBuffers(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(64 << 10)
		tc.SetWriteBuffer(64 << 10)
	}
}

// cut breaks every stream, as a member that died.
func (m *memberLink) cut() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		c.Close()
	}
	m.conns = nil
}

func (m *memberLink) Consoles(ctx context.Context) ([]remote.ClusterConsole, error) {
	m.mu.Lock()
	owner, broken := m.owner, m.broken
	m.mu.Unlock()
	if broken {
		return nil, errors.New("etcd unreachable")
	}
	var out []remote.ClusterConsole
	for _, ci := range owner.Consoles() {
		out = append(out, remote.ClusterConsole{Key: ci.Key, VMName: ci.VMName, VCUUID: ci.VCUUID, ServiceURI: ci.ServiceURI,
			Direction: "server", Member: m.member, Listen: 7001})
	}
	return out, nil
}

func (m *memberLink) DialConsole(ctx context.Context, c remote.ClusterConsole, state []byte) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", m.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	smallBuffers(nc)
	if _, err := nc.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(state))), state...)); err != nil {
		nc.Close()
		return nil, err
	}
	var n [4]byte
	if _, err := io.ReadFull(nc, n[:]); err != nil {
		nc.Close()
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(nc, msg); err != nil {
		nc.Close()
		return nil, err
	}
	if len(msg) > 0 {
		nc.Close()
		return nil, fmt.Errorf("member %s refused the stream: %s", m.member, msg)
	}
	return nc, nil
}

// twoMembers starts an owner (member "a", whose VMs connect to it) and a
// front door (member "b") that reaches a's consoles; extra goes into both
// [remote] tables.
func twoMembers(t testing.TB, extra string, grace time.Duration) (a, b *harness, link *memberLink) {
	t.Helper()
	link = newMemberLink(t, "b", "a")
	a = newHarnessGrace(t, extra, grace)
	b = newHarnessGrace(t, extra, grace, remote.WithCluster(link))
	link.mu.Lock()
	link.owner = a.hub
	link.mu.Unlock()
	return a, b, link
}

// TestForwardedSSHByteExact: `ssh alice+web-1@B` for a console that member
// A serves is attached there over the member link: all 256 byte values
// pass both ways unchanged (a clean pipe without a pty), A lists the
// client as alice's, read-write, "ssh via b", and the end of the SSH
// session detaches it there.
func TestForwardedSSHByteExact(t *testing.T) {
	a, b, _ := twoMembers(t, "", 5*time.Second)
	vm := a.vm("web-1", webUUID, fmt.Sprintf("telnet://127.0.0.1:%d", freePort(t)))
	a.console("web-1")
	c := b.ssh(t, "alice+web-1")
	ci := a.waitClients("web-1", 1)
	if cl := ci.Clients[0]; cl.User != "alice" || cl.Mode != "read-write" || cl.Via != "ssh via b" {
		t.Fatalf("client on the owner %+v", cl)
	}
	if n := len(b.hub.Consoles()); n != 0 {
		t.Fatalf("the front door has %d consoles of its own", n)
	}

	up := allBytes(64) // 16 KiB user → VM, including IAC, NUL, CR, Ctrl-E
	if _, err := c.stdin.Write(up); err != nil {
		t.Fatal(err)
	}
	readVM(t, vm, up)
	down := allBytes(1024) // 256 KiB VM → user
	got := make(chan []byte, 1)
	go func() { got <- c.readN(t, len(down)) }()
	if _, err := vm.Write(down); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if !bytes.Equal(g, down) {
			t.Fatal("ssh got bytes that differ from what the VM sent")
		}
	case <-time.After(testwait.Timeout):
		t.Fatal("the VM's output did not arrive")
	}
	c.stdin.Close()
	if code := c.exit(t); code != 0 {
		t.Fatalf("ssh exit %d, stderr %q", code, c.stderr.String())
	}
	a.waitClients("web-1", 0)
	if n := a.hub.Counters().ClientsDropped + b.hub.Counters().ClientsDropped; n != 0 {
		t.Fatalf("%d clients dropped", n)
	}
}

// TestForwardedMenuReadOnly: at B's telnet front door, bob (read-only on
// web-*) sees A's console in the menu, attaches read-only, gets the
// output, is told his typing is not sent, and his escape commands run
// (who) or detach at B (back to the menu). When the VM's port goes away
// on A, he is told and is back at B's menu.
func TestForwardedMenuReadOnly(t *testing.T) {
	a, b, _ := twoMembers(t, "", 300*time.Millisecond)
	vm := a.vm("web-1", webUUID, "web-1")
	a.console("web-1")
	u := dialLine(t, b.telnetAddr)
	u.login("bob", bobPW)
	menu := u.expect("console> ")
	if !strings.Contains(menu, "web-1/web-1") || !strings.Contains(menu, "@a") || !strings.Contains(menu, "a:7001") {
		t.Fatalf("menu at b:\n%s", menu)
	}
	u.send("web-1 rw")
	u.expect("read-only access")
	u.send("1")
	u.expect("attached to web-1 (read-only)")
	a.waitClients("web-1", 1)
	vm.Write([]byte("from the VM on a\r\n"))
	u.expect("from the VM on a")
	u.send("typed by bob")
	u.expect("you are read-only; input is not sent")
	u.nc.Write([]byte{0x05, 'c', 'w'}) // ^Ec w: who is attached
	u.expect("attached: bob (read-only, telnet via b from 127.0.0.1:")
	u.nc.Write([]byte{0x05, 'c', 'b'}) // BREAK: refused, read-only
	u.expect("read-only: BREAK not sent")
	u.nc.Write([]byte{0x05, 'c', '.'})
	u.expect("detached from web-1")
	u.expect("console> ")
	a.waitClients("web-1", 0)

	// Again, then the port goes away on a: bob is told and gets the menu.
	u.send("web-1")
	u.expect("attached to web-1 (read-only)")
	a.waitClients("web-1", 1)
	vm.Close()
	u.expect("the serial port of web-1 is gone")
	u.expect("console> ")
	testwait.For(t, "the console to be gone on a", func() bool { return len(a.hub.Consoles()) == 0 })
	u.send("")
	if menu := u.expect("console> "); !strings.Contains(menu, "No consoles you may reach") {
		t.Fatalf("menu after the port went:\n%s", menu)
	}
	// Nothing bob typed reached the VM: the one line it got is alice's.
	vm2 := a.vm("web-1", webUUID, "web-1")
	a.console("web-1")
	w := b.ssh(t, "alice+web-1")
	a.waitClients("web-1", 1)
	w.stdin.Write([]byte("from alice"))
	readVM(t, vm2, []byte("from alice"))
}

// TestForwardedOwnerLost: a user attached to an owner that stopped
// answering detaches with the escape at B all the same; when the member
// link to the owner breaks (the owner died), the user at B is told and is
// back at the menu; when the consoles of the other members cannot be
// listed, the menu says so.
func TestForwardedOwnerLost(t *testing.T) {
	a, b, link := twoMembers(t, "", 5*time.Second)
	a.vm("web-1", webUUID, "web-1")
	a.console("web-1")
	u := dialLine(t, b.telnetAddr)
	u.login("alice", alicePW)
	u.expect("console> ")
	link.mu.Lock()
	link.frozen = true
	link.mu.Unlock()
	u.send("web-1")
	u.send("typed into the void")
	u.nc.Write([]byte{0x05, 'c', '.'})
	u.expect("detached from web-1")
	u.expect("console> ")
	link.mu.Lock()
	link.frozen = false
	link.mu.Unlock()
	u.send("web-1")
	u.expect("attached to web-1 (read-write)")
	a.waitClients("web-1", 1)
	link.cut()
	u.expect("lost the console of web-1 on member a")
	u.expect("console> ")
	link.mu.Lock()
	link.broken = true
	link.mu.Unlock()
	u.send("")
	if menu := u.expect("console> "); !strings.Contains(menu, "not listed: etcd did not answer") {
		t.Fatalf("menu without the cluster:\n%s", menu)
	}
	a.waitClients("web-1", 0)
}

// TestForwardedStalledDropped: a user at B who stops reading a console A
// serves holds the VM for at most client_stall, then is told and dropped;
// a user attached at A meanwhile gets every byte.
func TestForwardedStalledDropped(t *testing.T) {
	a, b, _ := twoMembers(t, `client_queue = "64KiB"
client_stall = "300ms"`, 5*time.Second)
	vm := a.vm("web-22", "42100000-0000-0000-0000-00000000a022", "web-22")
	a.console("web-22")
	nc := dialSmall(t, b.telnetAddr)
	slow := &lineClient{t: t, nc: nc, r: newReader(nc)}
	slow.login("alice", alicePW)
	slow.expect("console> ")
	slow.send("web-22")
	slow.expect("attached to web-22")
	witness := a.ssh(t, "dave+web-22")
	a.waitClients("web-22", 2)

	streamWithWitness(t, vm, witness, bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16), nil)
	ci := a.waitClients("web-22", 1)
	if ci.Clients[0].User != "dave" || ci.Pauses == 0 {
		t.Fatalf("console on a %+v", ci)
	}
	if n := a.hub.Counters().ClientsDropped + b.hub.Counters().ClientsDropped; n < 1 || n > 2 {
		t.Fatalf("ClientsDropped: a %d, b %d", a.hub.Counters().ClientsDropped, b.hub.Counters().ClientsDropped)
	}
	nc.SetReadDeadline(time.Now().Add(testwait.Timeout))
	rest, err := io.ReadAll(slow.r)
	if err != nil {
		t.Fatalf("slow client: %v", err)
	}
	if !strings.Contains(string(rest), "you took no console output for 300ms while the console of web-22 waited for you; disconnecting") {
		t.Fatalf("slow client was not told; last bytes %q", remotetest.Tail(rest))
	}
}

// TestForwardedLockModes: lock modes hold across members. alice, at B,
// holds A's console exclusively: dave, at A itself, is refused as busy
// (the refusal on stderr, exit 1); once alice detaches (at B) he gets
// in, and alice, back at B, is refused exclusive-write while he writes.
func TestForwardedLockModes(t *testing.T) {
	a, b, _ := twoMembers(t, "", 5*time.Second)
	a.vm("web-1", webUUID, "web-1")
	a.console("web-1")
	u := dialLine(t, b.telnetAddr)
	u.login("alice", alicePW)
	u.expect("console> ")
	u.send("web-1 x")
	u.expect("attached to web-1 (exclusive)")
	a.waitClients("web-1", 1)
	d := a.ssh(t, "dave+web-1")
	if code := d.exit(t); code != 1 || !strings.Contains(d.stderr.String(), "console busy: alice holds it exclusively") {
		t.Fatalf("dave while alice holds it: exit %d, stderr %q", code, d.stderr.String())
	}
	u.nc.Write([]byte{0x05, 'c', '.'})
	u.expect("detached from web-1")
	u.expect("console> ")
	a.waitClients("web-1", 0)
	a.ssh(t, "dave+web-1")
	a.waitClients("web-1", 1)
	u.send("web-1 xw")
	u.expect("dave is attached read-write; exclusive write needs no other writer")
	u.expect("console> ")
}

// TestForwardedDropMode: with client_overflow = "drop", a user at B who
// falls more than client_queue behind A's console is told and dropped at
// once, and the VM is never held: a user at A gets every byte.
func TestForwardedDropMode(t *testing.T) {
	a, b, _ := twoMembers(t, `client_overflow = "drop"
client_queue = "64KiB"`, 5*time.Second)
	vm := a.vm("web-22", "42100000-0000-0000-0000-00000000a022", "web-22")
	a.console("web-22")
	nc := dialSmall(t, b.telnetAddr)
	slow := &lineClient{t: t, nc: nc, r: newReader(nc)}
	slow.login("alice", alicePW)
	slow.expect("console> ")
	slow.send("web-22")
	slow.expect("attached to web-22")
	witness := a.ssh(t, "dave+web-22")
	a.waitClients("web-22", 2)
	streamWithWitness(t, vm, witness, bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16), nil)
	ci := a.waitClients("web-22", 1)
	if ci.Clients[0].User != "dave" || ci.Pauses != 0 {
		t.Fatalf("console on a %+v", ci)
	}
	if n := a.hub.Counters().ClientsDropped + b.hub.Counters().ClientsDropped; n < 1 || n > 2 {
		t.Fatalf("ClientsDropped: a %d, b %d", a.hub.Counters().ClientsDropped, b.hub.Counters().ClientsDropped)
	}
	nc.SetReadDeadline(time.Now().Add(testwait.Timeout))
	rest, err := io.ReadAll(slow.r)
	if err != nil {
		t.Fatalf("slow client: %v", err)
	}
	if !strings.Contains(string(rest), "you fell more than 64KiB behind the console of web-22; disconnecting") {
		t.Fatalf("slow client was not told; last bytes %q", remotetest.Tail(rest))
	}
}

// BenchmarkConsoleThroughput: a VM's console output to one telnet user
// who logged in at the member that serves the console (local) or at
// another member's front door (forwarded: relayed over the stand-in
// member link, loopback TCP without TLS, 64 KiB socket buffers). One op
// is 64 KiB of output.
func BenchmarkConsoleThroughput(b *testing.B) {
	for _, mode := range []string{"local", "forwarded"} {
		b.Run(mode, func(b *testing.B) {
			a, fd, _ := twoMembers(b, "", 5*time.Second)
			vm := a.vm("web-1", webUUID, "web-1")
			a.console("web-1")
			door := a
			if mode == "forwarded" {
				door = fd
			}
			u := dialLine(b, door.telnetAddr)
			u.login("alice", alicePW)
			u.expect("console> ")
			u.send("web-1")
			u.expect("attached to web-1")
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16) // no CR, no IAC: the same bytes on the wire
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			wrote := make(chan error, 1)
			go func() {
				for range b.N {
					if _, err := vm.Write(chunk); err != nil {
						wrote <- err
						return
					}
				}
				wrote <- nil
			}()
			u.nc.SetReadDeadline(time.Now().Add(testwait.Timeout))
			if n, err := io.CopyN(io.Discard, u.r, int64(b.N*len(chunk))); err != nil {
				b.Fatalf("the user got %d bytes: %v", n, err)
			}
			b.StopTimer()
			if err := <-wrote; err != nil {
				b.Fatal(err)
			}
		})
	}
}
