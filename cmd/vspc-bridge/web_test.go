package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"golang.org/x/crypto/bcrypt"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// TestServeWebConsole is what `make run` with [web] listen and a user
// gives: the web listener in status, a direction-server VM in the list,
// and its console both ways over the WebSocket; a [web] change on reload
// is reported as needing a restart.
func TestServeWebConsole(t *testing.T) {
	pw, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := fmt.Sprintf("[[user]]\nname = \"alice\"\npassword = %q\naccess = [{vm = \"*\", mode = \"rw\"}]\n", pw)
	cfg := bridgeConfig("[remote]\nenabled = true\n[web]\nlisten = \"127.0.0.1:0\"\n" + users)
	b := startBridge(t, cfg, false)
	var base string
	for _, l := range b.d.status().Listeners {
		if l.Kind == kindWeb {
			base = l.URI
		}
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") || !strings.HasSuffix(base, "/") {
		t.Fatalf("web listener %q in %+v", base, b.d.status().Listeners)
	}
	vm := dialVM(t, b.addr(kindVSPC), "web-1", "vSPC.py")

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: testwait.Timeout}
	resp, err := hc.Post(base+"api/login", "application/json", strings.NewReader(`{"user":"alice","password":"secret"}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %v %v", resp, err)
	}
	resp.Body.Close()
	var id string
	testwait.For(t, "web-1 in the list", func() bool {
		resp, err := hc.Get(base + "api/consoles")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var l struct {
			Consoles []struct{ ID, VM, Kind string }
		}
		json.NewDecoder(resp.Body).Decode(&l)
		for _, c := range l.Consoles {
			if c.VM == "web-1" && c.Kind == "console" {
				id = c.ID
			}
		}
		return id != ""
	})

	h := http.Header{}
	for _, c := range jar.Cookies(resp.Request.URL) {
		h.Add("Cookie", c.Name+"="+c.Value)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"ws/console/"+id, &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{"vspc.console.v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	next := func(want string) {
		t.Helper()
		var got []byte
		for !bytes.Contains(got, []byte(want)) {
			typ, p, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("waiting for %q: %v (got %q)", want, err, got)
			}
			if typ == websocket.MessageBinary || strings.Contains(want, `"type"`) {
				got = append(got, p...)
			}
		}
	}
	next(`"type":"replay-end"`)
	if err := ws.Write(ctx, websocket.MessageBinary, []byte("typed in the browser\r")); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, vm, len("typed in the browser\r")); got != "typed in the browser\r" {
		t.Fatalf("the VM got %q", got)
	}
	vm.Write([]byte("from the VM\r\n"))
	next("from the VM")

	b.write(strings.Replace(cfg, `[web]`, "[web]\nping = \"30s\"", 1))
	res := b.reload()
	if !res.OK || !strings.Contains(strings.Join(res.Changes, "\n"), "needs a restart to apply: web") {
		t.Fatalf("reload: %+v", res)
	}
}
