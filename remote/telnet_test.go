package remote_test

import (
	"fmt"
	"strings"
	"testing"
)

const webUUID = "42100000-0000-0000-0000-00000000a001"

// TestTelnetPerVMPort: inetutils telnet, driven through tmux, reaches a
// direction-server VM's console on the port its service URI names, logs
// in, and exchanges data both ways.
func TestTelnetPerVMPort(t *testing.T) {
	h := newHarness(t, "")
	port := freePort(t)
	vm := h.vm("web-1", webUUID, fmt.Sprintf("telnet://127.0.0.1:%d", port))
	ci := h.console("web-1")
	if want := fmt.Sprintf("telnet://127.0.0.1:%d", port); ci.Listen != want {
		t.Fatalf("listen %q, want %q", ci.Listen, want)
	}
	if _, err := vm.Write([]byte("boot message before anyone attached\r\n")); err != nil {
		t.Fatal(err)
	}

	m := startTmux(t, "telnet", "127.0.0.1", fmt.Sprint(port))
	m.waitFor("login:")
	m.typeText("alice")
	m.typeEnter()
	m.waitFor("password:")
	m.typeText(alicePW)
	m.typeEnter()
	scr := m.waitFor("attached to web-1 (read-write)")
	if strings.Contains(scr, alicePW) {
		t.Fatalf("password echoed:\n%s", scr)
	}
	m.waitFor("boot message before anyone attached") // scrollback
	h.waitClients("web-1", 1)

	if _, err := vm.Write([]byte("web-1 login: ")); err != nil {
		t.Fatal(err)
	}
	m.waitFor("web-1 login: ")
	m.typeText("root ~!@#$%^&*()_+{}|:<>?`-=[];',./")
	m.typeEnter()
	readVM(t, vm, []byte("root ~!@#$%^&*()_+{}|:<>?`-=[];',./\r"))

	// Escape Ctrl-E c, then "." detaches and the per-VM session ends.
	m.typeKey("C-e")
	m.typeText("c.")
	m.waitFor("detached from web-1")
	h.waitClients("web-1", 0)
}
