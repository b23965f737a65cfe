package web_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/web"
)

// nullSink is a VM that takes whatever it is sent.
type nullSink struct{}

func (nullSink) Send([]byte) error { return nil }
func (nullSink) SendBreak() error  { return nil }

// FuzzUnauthenticated sends the handler any request without a session
// (any method, path, cookie, content type, origin and body) while a
// console exists: it never panics, never names the console, never sets a
// session cookie and never answers 200 where a session is needed.
func FuzzUnauthenticated(f *testing.F) {
	src := fmt.Sprintf("[vspc]\nlisten = \"127.0.0.1:0\"\n[remote]\nenabled = true\nlogin_delay = \"0s\"\nlogin_max_failures = 1000\n[web]\nlisten = \"127.0.0.1:0\"\n"+
		"[[user]]\nname = \"alice\"\npassword = %q\naccess = [{vm = \"*\", mode = \"rw\"}]\n", hash(f, alicePW))
	cfg, err := configs.Parse("fuzz.toml", []byte(src))
	if err != nil {
		f.Fatal(err)
	}
	hub, err := remote.New(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { hub.Close() })
	be, err := hub.Open(context.Background(), vspc.Request{Direction: vspc.DirServer, VMName: "secret-vm", VCUUID: "564d0000-0000-0000-0000-00000000beef", ServiceURI: "com1"}, nullSink{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { be.Close() })
	be.Write([]byte("secret output\r\n"))
	srv, err := web.New(web.Config{Config: cfg, Consoles: web.HubConsoles(hub)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.Close)
	needSession := []string{"/api/session", "/api/consoles", "/api/events", "/api/logout"}
	for _, s := range []struct{ method, path, cookie, ctype, origin, body string }{
		{"GET", "/api/consoles", "", "", "", ""},
		{"GET", "/api/events", "vspc_session=x", "", "", ""},
		{"POST", "/api/login", "", "application/json", "", `{"user":"alice","password":"x"}`},
		{"POST", "/api/login", "", "application/json", "https://evil.example", `{"user":"alice"}`},
		{"POST", "/api/logout", "vspc_session=", "text/plain", "null", ""},
		{"GET", "/api/consoles/0123456789abcdef0123/log", "", "", "", ""},
		{"GET", "/ws/console/0123456789abcdef0123?mode=rw", "", "", "", ""},
		{"GET", "/static/../web.go", "", "", "", ""},
		{"HEAD", "/static/vendor/xterm.js", "", "", "", ""},
	} {
		f.Add(s.method, s.path, s.cookie, s.ctype, s.origin, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, path, cookie, ctype, origin string, body []byte) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t") || method == "" || method == "CONNECT" {
			return
		}
		req, err := http.NewRequest(method, "http://127.0.0.1:1"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // an event stream that were opened would end at once
		req = req.WithContext(ctx)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		out := rec.Body.String()
		if strings.Contains(out, "secret-vm") || strings.Contains(out, "secret output") || strings.Contains(out, "beef") {
			t.Fatalf("%s %s: the answer names the console: %.300s", method, path, out)
		}
		for _, c := range rec.Result().Cookies() {
			if c.Value != "" {
				t.Fatalf("%s %s: a session cookie without a login: %v", method, path, c)
			}
		}
		p := req.URL.Path
		for _, n := range needSession {
			if p == n && rec.Code == http.StatusOK {
				t.Fatalf("%s %s: 200 without a session", method, path)
			}
		}
		if strings.HasPrefix(p, "/api/consoles/") && rec.Code == http.StatusOK {
			t.Fatalf("%s %s: 200 without a session", method, path)
		}
	})
}
