package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"

	"github.com/vspc-bridge/vspc-bridge/cluster/clustertest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// remoteMember is a cluster member with remote access: its SSH front
// door's address.
type remoteMember struct {
	b    *bridgeUnderTest
	stop func()
	ssh  string
}

// startRemoteCluster starts n members on one etcd cluster, each with
// remote access and an SSH front door, and the same users: alice may
// write to every console, bob may watch them.
func startRemoteCluster(t *testing.T, n int) []*remoteMember {
	t.Helper()
	return startRemoteClusterWith(t, n, "")
}

// startRemoteClusterWith is startRemoteCluster with extra keys for every
// member's [remote] table.
func startRemoteClusterWith(t *testing.T, n int, extra string) []*remoteMember {
	t.Helper()
	dir := t.TempDir()
	var ids []string
	for i := 1; i <= n; i++ {
		ids = append(ids, fmt.Sprintf("m%d", i))
	}
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", strings.Join(ids, ","), "-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	etcd := clustertest.StartEtcd(t, 1)
	var eps []string
	for _, e := range etcd.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	users := fmt.Sprintf(`
[[user]]
name = "alice"
password = %q
access = [{vm = "*", mode = "rw"}]
[[user]]
name = "bob"
password = %q
access = [{vm = "*", mode = "ro"}]
`, hash("alice-pw"), hash("bob-pw"))
	var ms []*remoteMember
	for i := 1; i <= n; i++ {
		sshAddr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
		b, stop := startMemberBridge(t, fmt.Sprintf(`[vspc]
listen = "127.0.0.1:0"
[admin]
listen = ""
[remote]
enabled = true
ssh_listen = %q
ssh_host_keys = [%q]
login_delay = "10ms"
%s
[cluster]
name = "lab"
member = "m%d"
endpoints = [%s]
link_listen = "127.0.0.1:%d"
link_ca = "%s/ca.crt"
link_cert = "%s/m%d.crt"
link_key = "%s/m%d.key"
lease_ttl = "5s"
validity_margin = "1s"
lock_delay = "1s"
reconnect_grace = "0s"
%s`, sshAddr, filepath.Join(t.TempDir(), "ssh_host_ed25519_key"), extra, i, strings.Join(eps, ", "), freeLoopbackPort(t), dir, dir, i, dir, i, users))
		ms = append(ms, &remoteMember{b: b, stop: stop, ssh: sshAddr})
	}
	testwait.For(t, "every member to see the others", func() bool {
		for _, m := range ms {
			if cl := m.b.d.status().Cluster; cl == nil || len(cl.Members) != n {
				return false
			}
		}
		return true
	})
	return ms
}

// sshPipe is an SSH session without a pty (a clean 8-bit pipe).
type sshPipe struct {
	c      *ssh.Client
	s      *ssh.Session
	in     io.WriteCloser
	out    io.Reader
	stderr *bytes.Buffer
	done   chan error
}

func dialSSH(t *testing.T, addr, login, pw string, cmd string) *sshPipe {
	t.Helper()
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: login, Auth: []ssh.AuthMethod{ssh.Password(pw)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: testwait.Timeout})
	if err != nil {
		t.Fatalf("ssh %s@%s: %v", login, addr, err)
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	p := &sshPipe{c: c, s: s, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	s.Stderr = p.stderr
	if p.in, err = s.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if p.out, err = s.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if cmd == "" {
		err = s.Shell()
	} else {
		err = s.Start(cmd)
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- s.Wait() }()
	t.Cleanup(func() { c.Close(); <-p.done })
	return p
}

// readN reads exactly n bytes of the session's output.
func (p *sshPipe) readN(t *testing.T, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	errc := make(chan error, 1)
	go func() { _, err := io.ReadFull(p.out, buf); errc <- err }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("ssh output: %v (stderr %q)", err, p.stderr.String())
		}
	case <-time.After(testwait.Timeout):
		p.c.Close()
		<-errc
		t.Fatalf("ssh output: timeout (stderr %q)", p.stderr.String())
	}
	return buf
}

func (p *sshPipe) ended(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(testwait.Timeout):
		t.Fatal("the SSH session did not end")
	}
	return nil
}

// everyByte is every byte value, n times over, scrambled.
func everyByte(n int) []byte {
	b := make([]byte, 0, 256*n)
	for i := range 256 * n {
		b = append(b, byte(i*131+i/256))
	}
	return b
}

// readFromVM reads exactly want from the VM's connection.
func readFromVM(t *testing.T, vm io.Reader, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	errc := make(chan error, 1)
	go func() { _, err := io.ReadFull(vm, got); errc <- err }()
	select {
	case err := <-errc:
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("the VM got %d bytes that differ from the %d sent (%v)", len(got), len(want), err)
		}
	case <-time.After(testwait.Timeout):
		t.Fatal("the VM did not get the input")
	}
}

// Users behind the shared address: a direction-server VM's console is
// served by the member its VM connected to (m1); users who log in at the
// other member's SSH front door (m2) reach it over the member link. Every
// byte value passes both ways; a read-only user's typing never reaches
// the VM; m1 lists both as attached through m2. When m1 leaves, the
// forwarded sessions end; the VM reconnects to m2, whose console the same
// login now reaches on m2 itself.
func TestClusterRemoteConsole(t *testing.T) {
	ms := startRemoteCluster(t, 2)
	vm := vspctest.VM{Name: "web-1", VCUUID: "50000000-0000-4000-8000-0000000000c1", Direction: vspc.DirServer, ServiceURI: "web-1"}
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	conn, err := vspctest.Dial(ctx, ms[0].b.addr(kindVSPC), vm)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testwait.For(t, "m1 to serve the console", func() bool { return len(ms[0].b.d.consoles()) == 1 })

	// The menu at m2 lists m1's console (SSH with a command: the console
	// named, read-write by alice's right).
	alice := dialSSH(t, ms[1].ssh, "alice+web-1", "alice-pw", "")
	bob := dialSSH(t, ms[1].ssh, "bob", "bob-pw", "web-1")
	testwait.For(t, "both users attached on m1", func() bool {
		cs := ms[0].b.d.consoles()
		return len(cs) == 1 && len(cs[0].Clients) == 2
	})
	for _, cl := range ms[0].b.d.consoles()[0].Clients {
		want := map[string]string{"alice": "read-write", "bob": "read-only"}[cl.User]
		if cl.Mode != want || cl.Via != "ssh via m2" {
			t.Errorf("client on m1 %+v: want mode %s, via ssh via m2", cl, want)
		}
	}
	if n := len(ms[1].b.d.consoles()); n != 0 {
		t.Fatalf("m2 serves %d consoles itself", n)
	}
	bob.in.Write([]byte("bob may not type"))
	up := everyByte(64) // 16 KiB user → VM
	if _, err := alice.in.Write(up); err != nil {
		t.Fatal(err)
	}
	readFromVM(t, conn, up)
	down := everyByte(512) // 128 KiB VM → users
	gotA := make(chan []byte, 1)
	gotB := make(chan []byte, 1)
	go func() { gotA <- alice.readN(t, len(down)) }()
	go func() { gotB <- bob.readN(t, len(down)) }()
	if _, err := conn.Write(down); err != nil {
		t.Fatal(err)
	}
	for who, c := range map[string]chan []byte{"alice": gotA, "bob": gotB} {
		if got := <-c; !bytes.Equal(got, down) {
			t.Fatalf("%s got bytes that differ from what the VM sent", who)
		}
	}
	alice.in.Write([]byte("last"))
	readFromVM(t, conn, []byte("last")) // bob's bytes never came

	// m1 leaves: the consoles it served close, and the forwarded sessions
	// with them. The VM reconnects to m2.
	ms[0].stop()
	alice.ended(t)
	bob.ended(t)
	conn2, err := vspctest.Dial(ctx, ms[1].b.addr(kindVSPC), vm)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	testwait.For(t, "m2 to serve the console", func() bool { return len(ms[1].b.d.consoles()) == 1 })
	again := dialSSH(t, ms[1].ssh, "alice+web-1", "alice-pw", "")
	testwait.For(t, "alice attached on m2", func() bool {
		cs := ms[1].b.d.consoles()
		return len(cs) == 1 && len(cs[0].Clients) == 1 && cs[0].Clients[0].Via == "ssh"
	})
	conn2.Write([]byte("after the move"))
	if got := again.readN(t, len("after the move")); string(got) != "after the move" {
		t.Fatalf("got %q", got)
	}
}

// TestClusterFaultRemoteStalled (VSPC_HEAVY=1): three members; a VM's
// console on m1 streams 16 MiB to a user attached at m1, a user who
// logged in at m3 and one at m2 who stops reading. The stalled user
// (forwarded over the member link) pauses the VM for at most
// client_stall and is then dropped; the other two, one local and one
// forwarded, get every byte.
func TestClusterFaultRemoteStalled(t *testing.T) {
	heavy(t)
	ms := startRemoteClusterWith(t, 3, `client_stall = "1s"`)
	vm := vspctest.VM{Name: "web-1", VCUUID: "50000000-0000-4000-8000-0000000000c2", Direction: vspc.DirServer, ServiceURI: "web-1"}
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	conn, err := vspctest.Dial(ctx, ms[0].b.addr(kindVSPC), vm)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testwait.For(t, "m1 to serve the console", func() bool { return len(ms[0].b.d.consoles()) == 1 })
	local := dialSSH(t, ms[0].ssh, "alice+web-1", "alice-pw", "")
	remote := dialSSH(t, ms[2].ssh, "alice+web-1", "alice-pw", "")
	stalled := dialSSH(t, ms[1].ssh, "bob+web-1", "bob-pw", "")
	testwait.For(t, "three users attached on m1", func() bool {
		cs := ms[0].b.d.consoles()
		return len(cs) == 1 && len(cs[0].Clients) == 3
	})
	down := everyByte(64 << 10) // 16 MiB
	gotL := make(chan []byte, 1)
	gotR := make(chan []byte, 1)
	go func() { gotL <- local.readN(t, len(down)) }()
	go func() { gotR <- remote.readN(t, len(down)) }()
	start := time.Now()
	wrote := make(chan error, 1)
	go func() { _, err := conn.Write(down); wrote <- err }()
	for who, c := range map[string]chan []byte{"the user at m1": gotL, "the user at m3": gotR} {
		select {
		case got := <-c:
			if !bytes.Equal(got, down) {
				t.Fatalf("%s got bytes that differ from what the VM sent", who)
			}
		case <-time.After(testwait.Timeout):
			t.Fatalf("%s did not get everything", who)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	stalled.ended(t)
	ci := ms[0].b.d.consoles()[0]
	var users []string
	for _, cl := range ci.Clients {
		users = append(users, cl.User+" "+cl.Via)
	}
	if len(ci.Clients) != 2 {
		t.Fatalf("clients on m1 after the stall: %v", users)
	}
	var dropped int64
	for _, m := range ms {
		dropped += m.b.d.remote().ClientsDropped
	}
	if dropped < 1 || dropped > 2 {
		t.Fatalf("%d clients dropped in the cluster, want the stalled one (counted by m2, m1 or both)", dropped)
	}
	t.Logf("16 MiB to a local and a forwarded user past a stalled forwarded one: %v; the console paused %d times, %v in all",
		elapsed.Round(time.Millisecond), ci.Pauses, ci.PausedTotal.Round(time.Millisecond))
}
