package remote_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestTwoClientsOneReadOnly: alice (telnet, per-VM port, read-write) and
// bob (telnet through the front door menu, read-only rights) watch the
// same console, with dave attached over SSH as a byte-exact witness. Both
// telnet users see the output; only alice's typing reaches the VM; alice
// is told when bob joins and leaves.
func TestTwoClientsOneReadOnly(t *testing.T) {
	h := newHarness(t, "")
	port := freePort(t)
	vm := h.vm("web-2", "42100000-0000-0000-0000-00000000a002", fmt.Sprintf("telnet://127.0.0.1:%d", port))
	h.console("web-2")

	witness := h.ssh(t, "dave+web-2")
	h.waitClients("web-2", 1)

	alice := startTmux(t, "telnet", "127.0.0.1", fmt.Sprint(port))
	alice.waitFor("login:")
	alice.typeText("alice")
	alice.typeEnter()
	alice.waitFor("password:")
	alice.typeText(alicePW)
	alice.typeEnter()
	alice.waitFor("attached to web-2 (read-write)")
	h.waitClients("web-2", 2)

	_, fport, _ := strings.Cut(h.telnetAddr, ":")
	bob := startTmux(t, "telnet", "127.0.0.1", fport)
	bob.waitFor("login:")
	bob.typeText("bob")
	bob.typeEnter()
	bob.waitFor("password:")
	bob.typeText(bobPW)
	bob.typeEnter()
	menu := bob.waitFor("console>")
	if !strings.Contains(menu, "web-2/telnet://127.0.0.1:") || !strings.Contains(menu, "42100000-0000-0000-0000-00000000a002") || !strings.Contains(menu, "attached") {
		t.Fatalf("menu:\n%s", menu)
	}
	bob.typeText("web-2")
	bob.typeEnter()
	bob.waitFor("attached to web-2 (read-only)")
	alice.waitFor("bob joined (read-only, telnet from 127.0.0.1:")
	ci := h.waitClients("web-2", 3)
	modes := map[string]string{}
	for _, c := range ci.Clients {
		modes[c.User] = c.Mode
	}
	if modes["alice"] != "read-write" || modes["bob"] != "read-only" || modes["dave"] != "read-write" {
		t.Fatalf("modes %v", modes)
	}

	out := []byte("the VM says hello to everyone\r\n")
	vm.Write(out)
	alice.waitFor("the VM says hello to everyone")
	bob.waitFor("the VM says hello to everyone")
	if got := witness.readN(t, len(out)); !bytes.Equal(got, out) {
		t.Fatalf("witness got %q", got)
	}

	bob.typeText("bob was here")
	bob.typeEnter()
	bob.waitFor("you are read-only; input is not sent")
	alice.typeText("alice was here")
	alice.typeEnter()
	readVM(t, vm, []byte("alice was here\r")) // and nothing of bob's

	// Who is attached (escape w), then bob detaches and alice is told.
	alice.typeKey("C-e")
	alice.typeText("cw")
	alice.waitFor("attached: dave (read-write, ssh")
	bob.typeKey("C-e")
	bob.typeText("c.")
	bob.waitFor("detached from web-2")
	bob.waitFor("console>") // back at the menu
	alice.waitFor("bob left (detached); 2 attached")
	h.waitClients("web-2", 2)
}

// TestExclusiveModes: exclusive-write keeps other writers out but lets
// watchers in (a read-write request is downgraded); exclusive keeps
// everybody out.
func TestExclusiveModes(t *testing.T) {
	h := newHarness(t, "")
	vm := h.vm("web-3", "42100000-0000-0000-0000-00000000a003", "web-3")
	h.console("web-3")

	xw := h.ssh(t, "alice+web-3", "xw")
	h.waitClients("web-3", 1)
	other := h.ssh(t, "dave+web-3", "xw")
	if code := other.exit(t); code != 1 || !strings.Contains(other.stderr.String(), "alice holds write access exclusively") {
		t.Fatalf("second xw: exit %d, stderr %q", code, other.stderr.String())
	}
	watcher := h.ssh(t, "dave+web-3") // asks read-write, gets read-only
	ci := h.waitClients("web-3", 2)
	for _, c := range ci.Clients {
		if c.User == "dave" && c.Mode != "read-only" {
			t.Fatalf("dave %s", c.Mode)
		}
	}
	watcher.stdin.Write([]byte("dave types"))
	xw.stdin.Write([]byte("alice types"))
	readVM(t, vm, []byte("alice types"))
	watcher.stdin.Close()
	xw.stdin.Close()
	h.waitClients("web-3", 0)

	x := h.ssh(t, "alice+web-3", "x")
	h.waitClients("web-3", 1)
	denied := h.ssh(t, "dave+web-3", "ro")
	if code := denied.exit(t); code != 1 || !strings.Contains(denied.stderr.String(), "alice holds it exclusively") {
		t.Fatalf("while exclusive: exit %d, stderr %q", code, denied.stderr.String())
	}
	x.stdin.Close()
	h.waitClients("web-3", 0)
}
