package remote_test

import (
	"errors"
	"io"
	"net"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/remote"
)

// TestClientReplay: Client.Replay tells how much of a client's output is
// scrollback: all of what the VM printed before the attach, none of what
// came after; nothing for a console that printed nothing yet.
func TestClientReplay(t *testing.T) {
	h := newHarness(t, "")
	b, _ := openConsole(t, h.hub, "web-40", "42100000-0000-0000-0000-00000000a040", "web-40")
	key := h.console("web-40").Key

	attach := func() (*remote.Client, net.Conn) {
		srv, cli := net.Pipe()
		cl, err := h.hub.Attach(key, srv, remote.AttachOptions{User: "alice", Via: "web"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Detach)
		t.Cleanup(func() { cli.Close() }) // first: the writer's Write ends
		return cl, cli
	}
	first, cli1 := attach()
	if first.Replay() != 0 {
		t.Fatalf("replay before any output: %d", first.Replay())
	}
	go io.Copy(io.Discard, cli1)
	b.Write([]byte("boot\r\n"))

	second, cli2 := attach()
	if second.Replay() != len("boot\r\n") {
		t.Fatalf("replay %d, want %d", second.Replay(), len("boot\r\n"))
	}
	b.Write([]byte("live"))
	got := make([]byte, second.Replay()+len("live"))
	if _, err := io.ReadFull(cli2, got); err != nil || string(got) != "boot\r\nlive" {
		t.Fatalf("second client read %q, %v", got, err)
	}
}

func TestLoginForOtherDoors(t *testing.T) {
	h := newHarness(t, "login_max_failures = 2")
	if u, err := h.hub.Login("192.0.2.1", "alice", "web", []byte(alicePW)); err != nil || u.Name != "alice" {
		t.Fatalf("login: %v, %v", u, err)
	}
	if h.hub.User("alice") == nil || h.hub.User("mallory") != nil {
		t.Fatal("User lookup")
	}
	for range 2 {
		if _, err := h.hub.Login("192.0.2.1", "alice", "web", []byte("wrong")); !errors.Is(err, remote.ErrLoginFailed) {
			t.Fatalf("wrong password: %v", err)
		}
	}
	if _, err := h.hub.Login("192.0.2.1", "alice", "web", []byte(alicePW)); !errors.Is(err, remote.ErrLoginBlocked) {
		t.Fatalf("after 2 failures: %v", err)
	}
	k := h.hub.Counters()
	if k.Logins != 1 || k.LoginFailures != 2 || k.LoginsRefused != 1 {
		t.Fatalf("counters %+v", k)
	}
}
