package remote_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// lineClient is a minimal scripted telnet user: it ignores the server's
// option negotiation and reads text until a marker appears.
type lineClient struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
	sb strings.Builder // everything read so far
}

func newReader(nc net.Conn) *bufio.Reader { return bufio.NewReader(nc) }

func dialLine(t testing.TB, addr string) *lineClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &lineClient{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// expect reads until the text read since the last expect contains s.
func (c *lineClient) expect(s string) string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := c.sb.Len()
	for !strings.Contains(c.sb.String()[start:], s) {
		b, err := c.r.ReadByte()
		if err != nil {
			c.t.Fatalf("waiting for %q: %v; got %q", s, err, c.sb.String()[start:])
		}
		c.sb.WriteByte(b)
	}
	return c.sb.String()[start:]
}

// closed reports whether the server closes the connection soon.
func (c *lineClient) closed() bool {
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			var ne net.Error
			return !(errorAs(err, &ne) && ne.Timeout())
		}
		c.sb.WriteByte(b)
	}
}

func (c *lineClient) send(s string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(s + "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *lineClient) login(user, pw string) {
	c.t.Helper()
	c.expect("login: ")
	c.send(user)
	c.expect("password: ")
	c.send(pw)
}

// TestLoginFailures: a wrong password and an unknown user get the same
// "Login incorrect"; three failures end the connection; a user without
// rights to the VM is refused at its port; the front door lists only the
// consoles a user may reach.
func TestLoginFailures(t *testing.T) {
	h := newHarness(t, "")
	port := freePort(t)
	h.vm("db-1", "42100000-0000-0000-0000-00000000d001", fmt.Sprintf("telnet://127.0.0.1:%d", port))
	h.vm("web-1", webUUID, "web-1")
	h.console("db-1")
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	c := dialLine(t, addr)
	c.login("alice", "wrong")
	c.expect("Login incorrect")
	c.login("nosuchuser", alicePW)
	c.expect("Login incorrect")
	c.login("carol", "wrong")
	c.expect("Login incorrect")
	if !c.closed() {
		t.Fatal("connection open after 3 failed logins")
	}

	c = dialLine(t, addr) // bob has no rights to db-*
	c.login("bob", bobPW)
	c.expect("bob has no access to the console of db-1")
	if !c.closed() {
		t.Fatal("connection open after access was denied")
	}
	if n := len(h.console("db-1").Clients); n != 0 {
		t.Fatalf("%d clients", n)
	}

	c = dialLine(t, h.telnetAddr) // the front door shows carol db-1 only
	c.login("carol", carolPW)
	menu := c.expect("console> ")
	if !strings.Contains(menu, "db-1") || strings.Contains(menu, "web-1") {
		t.Fatalf("carol's menu:\n%s", menu)
	}
	c.send("web-1")
	c.expect(`no console "web-1" that you may reach`)
	c.send("1")
	c.expect("attached to db-1 (read-write)")
}

// TestLoginRateLimit: after login_max_failures failures from one address
// even the right password is refused, over telnet and over SSH, until
// login_window has passed (on the hub's clock, moved forward).
func TestLoginRateLimit(t *testing.T) {
	h := newHarness(t, `login_max_failures = 4
login_window = "1h"`)
	h.vm("web-1", webUUID, "web-1")
	h.console("web-1")
	for range 2 {
		c := dialLine(t, h.telnetAddr)
		c.login("alice", "guess1")
		c.expect("Login incorrect")
		c.login("alice", "guess2")
		c.expect("Login incorrect")
		c.nc.Close()
	}
	c := dialLine(t, h.telnetAddr)
	c.login("alice", alicePW)
	c.expect("Too many failed logins")
	if !c.closed() {
		t.Fatal("connection open after a blocked login")
	}
	s := h.ssh(t, "alice+web-1") // right key, same address: blocked too
	if code := s.exit(t); code != 255 {
		t.Fatalf("ssh while blocked: exit %d, stderr %q", code, s.stderr.String())
	}
	h.clock.advance(time.Hour)
	c = dialLine(t, h.telnetAddr)
	c.login("alice", alicePW)
	c.expect("console> ")
	if n := h.hub.Counters(); n.LoginFailures != 4 || n.LoginsRefused < 2 || n.Logins != 1 {
		t.Fatalf("counters %+v", n)
	}
}
