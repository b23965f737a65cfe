package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/web"
)

// BenchmarkList measures GET /api/consoles for a logged-in user with
// 5,000 consoles: "cached" reuses the shared snapshot (what most of a
// second's requests do), "collect" walks every console each time (once
// per 500 ms, or after someone attached or detached).
func BenchmarkList(b *testing.B) {
	const n = 5000
	src := fmt.Sprintf("[vspc]\nlisten = \"127.0.0.1:0\"\n[remote]\nenabled = true\n[web]\nlisten = \"127.0.0.1:0\"\n"+
		"[[user]]\nname = \"alice\"\npassword = %q\naccess = [{vm = \"web-*\", mode = \"rw\"}]\n", hash(b, alicePW))
	cfg, err := configs.Parse("bench.toml", []byte(src))
	if err != nil {
		b.Fatal(err)
	}
	hub, err := remote.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	for i := range n {
		name := fmt.Sprintf("web-%04d", i)
		if i%2 == 1 {
			name = fmt.Sprintf("db-%04d", i) // alice may not see these
		}
		be, err := hub.Open(context.Background(), vspc.Request{Direction: vspc.DirServer, VMName: name, VCUUID: fmt.Sprintf("564d0000-0000-0000-0000-%012d", i), ServiceURI: "com1"}, nullSink{})
		if err != nil {
			b.Fatal(err)
		}
		defer be.Close()
	}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv, err := web.New(web.Config{Config: cfg, Consoles: web.HubConsoles(hub), Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	login := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "http://127.0.0.1/api/login", strings.NewReader(`{"user":"alice","password":"`+alicePW+`"}`))
	req.Header.Set("Content-Type", "application/json")
	srv.ServeHTTP(login, req)
	if login.Code != http.StatusOK {
		b.Fatalf("login: %d %s", login.Code, login.Body)
	}
	cookie := login.Result().Cookies()[0]
	get := func(b *testing.B) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "http://127.0.0.1/api/consoles", nil)
		req.AddCookie(cookie)
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "web-4998") || strings.Contains(rec.Body.String(), "db-0001") {
			b.Fatalf("list: %d", rec.Code)
		}
	}
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			get(b)
		}
	})
	b.Run("collect", func(b *testing.B) {
		for b.Loop() {
			mu.Lock()
			now = now.Add(time.Second) // past the snapshot's life
			mu.Unlock()
			get(b)
		}
	})
}
