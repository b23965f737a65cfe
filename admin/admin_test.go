package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vspc-bridge/vspc-bridge/alerts"
	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

func TestMain(m *testing.M) { leaktest.Main(m, 3*time.Second) }

// rig is a bridge and VM server on 127.0.0.1 with the admin handler in
// front, and a raw TCP "remote system" the VMs dial through connect_allow.
type rig struct {
	t    *testing.T
	addr string // VM listener
	srv  *vspc.Server
	br   *bridge.Bridge
	api  *httptest.Server
	h    *Handler
}

const token = "t0ken"

// newRig's hand-overs wait for their destination as long as a test may
// take: each outcome is driven by the test, never by a clock.
func newRig(t *testing.T, extra Config) *rig {
	t.Helper()
	return newRigPeerTimeout(t, extra, 2*testwait.Timeout)
}

func newRigPeerTimeout(t *testing.T, extra Config, peerTimeout time.Duration) *rig {
	t.Helper()
	cfg, err := configs.Parse("t.toml", []byte("[vspc]\nlisten = \"127.0.0.1:0\"\n[policy]\nconnect_allow = [\"127.0.0.0/8\"]\nreconnect_min = \"20ms\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t}
	r.br = bridge.New(cfg, nil)
	r.srv = vspc.NewServer(vspc.Config{Bridger: r.br, GracePeriod: time.Millisecond, PeerTimeout: peerTimeout})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	served := make(chan struct{})
	go func() { defer close(served); r.srv.Serve(context.Background(), ln) }()
	extra.Server = r.srv
	extra.Devices = r.br.Devices
	extra.Token = func() string { return token }
	r.h = New(extra)
	r.api = httptest.NewServer(r.h)
	t.Cleanup(func() {
		r.api.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r.srv.Shutdown(ctx)
		<-served
		r.br.Close()
	})
	return r
}

func (r *rig) client() *Client { return &Client{Base: r.api.URL, Token: token} }

// vm dials a simulated VM in the client direction to a new remote of its
// own (a device is owned by one VM at a time) and returns it with the
// remote listener and the remote's side of its connection.
func (r *rig) vm(name, uuid string) (*vspctest.Conn, net.Listener, net.Conn) {
	r.t.Helper()
	remote, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	c, err := vspctest.Dial(r.t.Context(), r.addr, vspctest.VM{Name: name, VCUUID: uuid, Direction: vspc.DirClient, ServiceURI: "tcp://" + remote.Addr().String()})
	if err != nil {
		r.t.Fatal(err)
	}
	rc := accept(r.t, remote)
	r.t.Cleanup(func() { c.Close(); rc.Close(); remote.Close() })
	return c, remote, rc
}

func accept(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(testwait.Timeout))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readN(t *testing.T, rd io.Reader, n int) string {
	t.Helper()
	if c, ok := rd.(net.Conn); ok {
		c.SetReadDeadline(time.Now().Add(testwait.Timeout))
	}
	buf := make([]byte, n)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(rd, buf); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testwait.Timeout):
		t.Fatal("read timed out")
	}
	return string(buf)
}

// metrics scrapes /metrics like Prometheus does.
func (r *rig) metrics() map[string]*dto.MetricFamily {
	r.t.Helper()
	req, _ := http.NewRequest("GET", r.api.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		r.t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return fams
}

// value returns the sample of family name whose labels include want
// ("k=v" pairs); -1 if there is none.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for _, w := range want {
			k, v, _ := strings.Cut(w, "=")
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	return -1
}

// TestSessionsAndMetricsDuringVMotion runs two simulated VMs through the
// bridge, migrates one, and checks /api/v1/sessions, /api/v1/devices and
// /metrics against what the test did.
func TestSessionsAndMetricsDuringVMotion(t *testing.T) {
	r := newRig(t, Config{})
	ctx := t.Context()
	const u1, u2 = "50000000-0000-0000-0000-0000000000a1", "50000000-0000-0000-0000-0000000000a2"
	vm1, remote1, rc1 := r.vm("web-1", u1)
	vm2, remote2, rc2 := r.vm("db-1", u2)

	vm1.Write([]byte("hello"))      // 5 bytes from the VM
	readN(t, rc1, 5)                //
	rc1.Write([]byte("world\xff!")) // 7 bytes to the VM, 8 on the wire (IAC doubled)
	readN(t, vm1, 7)
	vm2.Write([]byte("abc"))
	readN(t, rc2, 3)

	fams := r.metrics()
	if v := value(fams, "vspc_bridge_ports", "state=attached"); v != 2 {
		t.Errorf("ports attached = %v, want 2", v)
	}
	if v := value(fams, "vspc_bridge_vm_connections"); v != 2 {
		t.Errorf("vm_connections = %v, want 2", v)
	}

	// vMotion web-1 to a "destination host".
	dst, err := vspctest.Migrate(ctx, vm1, r.addr, []byte("seq-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	rc1.Write([]byte("after"))
	if got := readN(t, dst, 5); got != "after" {
		t.Fatalf("destination got %q", got)
	}
	dst.Write([]byte("xy"))
	readN(t, rc1, 2)

	// db-1 goes through the other outcomes a test can drive: a hand-over
	// in progress (ports{state="vmotion"}), a second BEGIN answered
	// NOTNOW, a destination with a wrong secret, ABORT. (The rig's peer
	// timeout is longer than the test: "timed out" has its own test.)
	secret, err := vm2.Begin(ctx, []byte("seq-2"))
	if err != nil {
		t.Fatal(err)
	}
	fams = r.metrics()
	if v := value(fams, "vspc_bridge_ports", "state=vmotion"); v != 1 {
		t.Errorf("ports in vmotion during a hand-over = %v, want 1", v)
	}
	if _, err := vm2.Begin(ctx, []byte("seq-3")); !errors.Is(err, vspctest.ErrNotNow) {
		t.Errorf("second BEGIN: %v, want NOTNOW", err)
	}
	wrong := append([]byte(nil), secret...)
	wrong[0] ^= 1
	if _, err := vspctest.DialPeer(ctx, r.addr, vspctest.VM{Name: "db-1", VCUUID: u2}, []byte("seq-2"), wrong); err == nil {
		t.Error("PEER with a wrong secret was accepted")
	}
	testwait.For(t, "bad secret counted", func() bool { return r.srv.Counters().VMotionsBadSecret == 1 })
	vm2.Abort()
	testwait.For(t, "abort counted", func() bool { return r.srv.Counters().VMotionsAborted == 1 })
	testwait.For(t, "web-1 attached to its destination", func() bool {
		l, err := r.client().Sessions(ctx, "web-1")
		return err == nil && len(l.Sessions) == 1 && l.Sessions[0].State == "attached" && l.Sessions[0].Peer == dst.LocalAddr().String()
	})

	l, err := r.client().Sessions(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Sessions) != 2 {
		t.Fatalf("%d sessions, want 2: %+v", len(l.Sessions), l.Sessions)
	}
	db, web := l.Sessions[0], l.Sessions[1] // sorted by VM name
	if web.VM != "web-1" || web.VCUUID != u1 || web.Direction != "client" || web.ServiceURI != "tcp://"+remote1.Addr().String() {
		t.Errorf("web-1 identity: %+v", web)
	}
	if web.BytesFromVM != 7 || web.BytesToVM != 8+5 {
		t.Errorf("web-1 bytes from VM %d (want 7), to VM %d (want 13)", web.BytesFromVM, web.BytesToVM)
	}
	if web.VMotions != 1 || web.LastHandOver == nil || web.LastHandOver.Outcome != "completed" || web.LastHandOver.To != dst.LocalAddr().String() {
		t.Errorf("web-1 hand-over: %d %+v", web.VMotions, web.LastHandOver)
	}
	if web.Device == nil || web.Device.State != "up" || web.Device.URI != "tcp://"+remote1.Addr().String() || web.Device.Via != "connect_allow" || web.Device.Connects != 1 {
		t.Errorf("web-1 device: %+v", web.Device)
	}
	if web.RemoteUsers == nil || web.Since.IsZero() || web.Since.After(time.Now()) {
		t.Errorf("web-1 remote users %v, since %v", web.RemoteUsers, web.Since)
	}
	if db.VM != "db-1" || db.BytesFromVM != 3 || db.VMotions != 0 || db.LastHandOver == nil || db.LastHandOver.Outcome != "aborted" {
		t.Errorf("db-1: %+v %+v", db, db.LastHandOver)
	}

	fams = r.metrics()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"vspc_bridge_vmotions_total", []string{"outcome=completed"}, 1},
		{"vspc_bridge_vmotions_total", []string{"outcome=aborted"}, 1},
		{"vspc_bridge_vmotions_total", []string{"outcome=notnow"}, 1},
		{"vspc_bridge_vmotions_total", []string{"outcome=bad_secret"}, 1},
		{"vspc_bridge_vmotions_total", []string{"outcome=timed_out"}, 0},
		{"vspc_bridge_port_bytes_total", []string{"direction=from_vm"}, 7 + 3},
		{"vspc_bridge_port_bytes_total", []string{"direction=to_vm"}, 13},
		{"vspc_bridge_ports", []string{"state=attached"}, 2},
		{"vspc_bridge_ports", []string{"state=vmotion"}, 0},
		{"vspc_bridge_devices", []string{"state=up"}, 2},
		{"vspc_bridge_device_reconnects_total", nil, 0},
		{"vspc_bridge_connections_accepted_total", nil, 4},                       // 2 VMs, 1 destination, 1 impostor
		{"vspc_bridge_handshake_failures_total", []string{"reason=bad_peer"}, 1}, // the impostor
		{"vspc_bridge_handshake_failures_total", []string{"reason=timeout"}, 0},
		{"vspc_bridge_handshake_failures_total", []string{"reason=protocol_error"}, 0},
		{"vspc_bridge_queued_bytes", nil, 0},
		{"vspc_bridge_device_backlog_bytes", nil, 0},
	} {
		if got := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if fams["go_goroutines"] == nil {
		t.Error("no Go runtime metrics")
	}

	// The remote of db-1 drops: the link reconnects; db-1 then goes away
	// and its bytes stay counted.
	rc2.Close()
	rc2b := accept(t, remote2)
	defer rc2b.Close()
	testwait.For(t, "device reconnect", func() bool { return value(r.metrics(), "vspc_bridge_device_reconnects_total") == 1 })
	vm2.Close()
	testwait.For(t, "db-1 gone", func() bool { return value(r.metrics(), "vspc_bridge_ports", "state=attached") == 1 })
	fams = r.metrics()
	if v := value(fams, "vspc_bridge_port_bytes_total", "direction=from_vm"); v != 10 {
		t.Errorf("from_vm after db-1 closed = %v, want 10", v)
	}
	if v := value(fams, "vspc_bridge_device_reconnects_total"); v != 1 {
		t.Errorf("device reconnects after db-1 closed = %v, want 1", v)
	}

	d, err := r.client().Devices(ctx)
	if err != nil || len(d.Devices) != 1 || d.Devices[0].VM != "web-1" {
		t.Errorf("devices: %+v %v", d, err)
	}
}

// TestHandOverTimeoutReported: a hand-over whose destination never comes
// ends "timed out" in /metrics and in the session's last hand-over, and
// the port is attached to its source again. The peer timeout is short;
// nothing here has to happen before it fires.
func TestHandOverTimeoutReported(t *testing.T) {
	r := newRigPeerTimeout(t, Config{}, 20*time.Millisecond)
	const u = "50000000-0000-0000-0000-0000000000a3"
	vm, _, rc := r.vm("app-1", u)
	vm.Write([]byte("abc"))
	readN(t, rc, 3)
	if _, err := vm.Begin(t.Context(), []byte("seq-t")); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the hand-over to time out", func() bool { return r.srv.Counters().VMotionsTimedOut == 1 })
	testwait.For(t, "app-1 attached to its source again", func() bool {
		return value(r.metrics(), "vspc_bridge_ports", "state=attached") == 1
	})
	fams := r.metrics()
	for _, outcome := range []string{"completed", "aborted", "notnow", "bad_secret", "timed_out"} {
		want := 0.0
		if outcome == "timed_out" {
			want = 1
		}
		if got := value(fams, "vspc_bridge_vmotions_total", "outcome="+outcome); got != want {
			t.Errorf("vmotions_total{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	l, err := r.client().Sessions(t.Context(), "app-1")
	if err != nil || len(l.Sessions) != 1 {
		t.Fatalf("sessions: %+v %v", l, err)
	}
	if s := l.Sessions[0]; s.VMotions != 0 || s.LastHandOver == nil || s.LastHandOver.Outcome != "timed out" || s.State != "attached" {
		t.Errorf("app-1: %+v %+v", s, s.LastHandOver)
	}
	vm.Write([]byte("after"))
	if got := readN(t, rc, 5); got != "after" {
		t.Errorf("data after the timed-out hand-over: %q", got)
	}
}

func TestAuthAndHealth(t *testing.T) {
	ready := fmt.Errorf("listeners not bound yet")
	r := newRig(t, Config{Ready: func() error { return ready }})
	get := func(path, tok string) (int, string) {
		req, _ := http.NewRequest("GET", r.api.URL+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/metrics", "/api/v1/sessions", "/api/v1/devices", "/api/v1/status", "/nope"} {
		if code, _ := get(p, ""); code != 401 {
			t.Errorf("%s without token: %d", p, code)
		}
		if code, _ := get(p, "wrong"); code != 401 {
			t.Errorf("%s with a wrong token: %d", p, code)
		}
	}
	if code, body := get("/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz", ""); code != 503 || !strings.Contains(body, "listeners not bound yet") {
		t.Errorf("/readyz not ready: %d %q", code, body)
	}
	ready = nil
	if code, _ := get("/readyz", ""); code != 200 {
		t.Errorf("/readyz ready: %d", code)
	}
	if code, body := get("/nope", token); code != 404 || !strings.Contains(body, "no such endpoint") {
		t.Errorf("/nope: %d %q", code, body)
	}
	_, err := (&Client{Base: r.api.URL, Token: "bad"}).Status(t.Context())
	var se *StatusError
	if !errorsAs(err, &se) || se.Code != 401 || !strings.Contains(err.Error(), "missing or wrong bearer token") {
		t.Errorf("client with a bad token: %v", err)
	}
	if _, err := r.client().Sessions(t.Context(), "no-such-vm"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown VM: %v", err)
	}
	if res, err := r.client().Reload(t.Context()); err == nil {
		t.Errorf("reload without a Reload func: %+v", res)
	}
}

func TestReloadAndStatus(t *testing.T) {
	calls := 0
	m := alerts.New(alerts.Config{Rules: []alerts.Rule{{Name: "panic", Pattern: regexpMust("panic")}}})
	r := newRig(t, Config{
		Reload: func(ctx context.Context) ReloadResult {
			calls++
			if calls == 1 {
				return ReloadResult{OK: true, Changes: []string{"route x added"}}
			}
			return ReloadResult{Errors: []string{"configs: a.toml:3: vspc.listen: bad"}}
		},
		Status: func() Status {
			return Status{Version: "v9", Listeners: []Listener{{Kind: "vspc-tls", Addr: "127.0.0.1:1", URI: "telnets://h:1#thumbprint=AA", CertNotAfter: time.Unix(2000000000, 0)}}, Reloads: Reloads{OK: 1, Rejected: 2}}
		},
		Alerts: m.Stats,
	})
	res, err := r.client().Reload(t.Context())
	if err != nil || !res.OK || res.Changes[0] != "route x added" {
		t.Errorf("reload 1: %+v %v", res, err)
	}
	res, err = r.client().Reload(t.Context())
	if err != nil || res.OK || len(res.Errors) != 1 {
		t.Errorf("reload 2 (rejected): %+v %v", res, err)
	}
	st, err := r.client().Status(t.Context())
	if err != nil || st.Version != "v9" || st.Listeners[0].URI != "telnets://h:1#thumbprint=AA" || st.Time.IsZero() {
		t.Errorf("status: %+v %v", st, err)
	}
	fams := r.metrics()
	for _, c := range []struct {
		name  string
		label string
		want  float64
	}{
		{"vspc_bridge_config_reloads_total", "result=ok", 1},
		{"vspc_bridge_config_reloads_total", "result=rejected", 2},
		{"vspc_bridge_tls_cert_expiry_timestamp_seconds", "listener=vspc-tls", 2000000000},
		{"vspc_bridge_build_info", "version=v9", 1},
		{"vspc_bridge_alert_webhook_total", "result=sent", 0},
	} {
		if got := value(fams, c.name, c.label); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.label, got, c.want)
		}
	}
	// The JSON field names are a contract.
	raw := map[string]any{}
	req, _ := http.NewRequest("GET", r.api.URL+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	for _, k := range []string{"version", "listeners", "reloads", "ports", "vm_connections", "counters", "alert_rules"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status JSON lacks %q", k)
		}
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func regexpMust(s string) *regexp.Regexp { return regexp.MustCompile(s) }

// fakeServer is a Server with fixed ports.
type fakeServer struct{ ports []vspc.PortInfo }

func (f fakeServer) Ports() []vspc.PortInfo  { return f.ports }
func (f fakeServer) Counters() vspc.Counters { return vspc.Counters{} }
func (f fakeServer) Sessions() int           { return len(f.ports) }

// TestSessionsJoinConsoles: a direction-server port with remote access
// shows its console's listener and users; a port without a console has an
// empty list, never null.
func TestSessionsJoinConsoles(t *testing.T) {
	since := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	h := New(Config{
		Server: fakeServer{[]vspc.PortInfo{
			{VMName: "web-1", VCUUID: "u1", ServiceURI: "web-1", Direction: "server", State: "attached"},
			{VMName: "db-1", VCUUID: "u2", ServiceURI: "tcp://x:1", Direction: "client", State: "detached"},
		}},
		Consoles: func() []Console {
			return []Console{{VMName: "web-1", VCUUID: "u1", ServiceURI: "web-1", Listen: "telnet://127.0.0.1:7001",
				Users: []RemoteUser{{User: "alice", Mode: "read-write", Peer: "10.0.0.9:5000", Via: "ssh", Since: since}}}}
		},
	})
	s := h.Sessions("")
	if len(s) != 2 || s[0].VM != "db-1" || s[1].VM != "web-1" {
		t.Fatalf("sessions %+v", s)
	}
	if s[0].RemoteUsers == nil || len(s[0].RemoteUsers) != 0 || s[0].RemoteListen != "" || s[0].Device != nil {
		t.Errorf("db-1: %+v", s[0])
	}
	if s[1].RemoteListen != "telnet://127.0.0.1:7001" || len(s[1].RemoteUsers) != 1 || s[1].RemoteUsers[0].User != "alice" {
		t.Errorf("web-1: %+v", s[1])
	}
	if got := h.Sessions("U2"); len(got) != 1 || got[0].VM != "db-1" {
		t.Errorf("select by UUID: %+v", got)
	}
	b, _ := json.Marshal(s[0])
	if !strings.Contains(string(b), `"remote_users":[]`) || !strings.Contains(string(b), `"device":null`) {
		t.Errorf("JSON %s", b)
	}
}

// TestNoTokenLocalOnly: without a token the API answers local clients
// only, so a web page cannot read it through DNS rebinding or post a
// reload across sites.
func TestNoTokenLocalOnly(t *testing.T) {
	h := New(Config{Server: fakeServer{}, Reload: func(context.Context) ReloadResult { return ReloadResult{OK: true} }})
	for _, c := range []struct {
		method, host, origin string
		want                 int
	}{
		{"GET", "127.0.0.1:13372", "", 200},
		{"GET", "localhost:13372", "", 200},
		{"GET", "[::1]:13372", "", 200},
		{"GET", "attacker.example:13372", "", 403},
		{"POST", "127.0.0.1:13372", "https://attacker.example", 403},
		{"POST", "127.0.0.1:13372", "", 200},
	} {
		path := "/api/v1/sessions"
		if c.method == "POST" {
			path = "/api/v1/reload"
		}
		req := httptest.NewRequest(c.method, path, nil)
		req.Host = c.host
		if c.origin != "" {
			req.Header.Set("Origin", c.origin)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("%s %s Host %s Origin %q: %d, want %d", c.method, path, c.host, c.origin, rec.Code, c.want)
		}
	}
}

// TestRemoteCounters: remote-access counters appear in /metrics and in
// /api/v1/status when remote access is on, and not at all when it is off.
func TestRemoteCounters(t *testing.T) {
	get := func(h *Handler, path string) string {
		t.Helper()
		req := httptest.NewRequest("GET", path, nil)
		req.Host = "127.0.0.1:13372"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body.String())
		}
		return rec.Body.String()
	}
	on := New(Config{Server: fakeServer{}, Remote: func() *RemoteCounters {
		return &RemoteCounters{Logins: 3, LoginFailures: 2, LoginsRefused: 1, ClientsDropped: 4, Sessions: 5, Consoles: 6}
	}})
	m := get(on, "/metrics")
	for _, want := range []string{
		`vspc_bridge_remote_logins_total{result="ok"} 3`,
		`vspc_bridge_remote_logins_total{result="failed"} 2`,
		`vspc_bridge_remote_logins_total{result="refused"} 1`,
		`vspc_bridge_remote_clients_dropped_total 4`,
		`vspc_bridge_remote_sessions 5`,
		`vspc_bridge_remote_consoles 6`,
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	var st Status
	if err := json.Unmarshal([]byte(get(on, "/api/v1/status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Remote == nil || *st.Remote != (RemoteCounters{3, 2, 1, 4, 5, 6}) {
		t.Errorf("status remote %+v", st.Remote)
	}
	for _, off := range []*Handler{
		New(Config{Server: fakeServer{}}),
		New(Config{Server: fakeServer{}, Remote: func() *RemoteCounters { return nil }}),
	} {
		if m := get(off, "/metrics"); strings.Contains(m, "vspc_bridge_remote_") {
			t.Errorf("remote access off, yet /metrics has remote series")
		}
		if s := get(off, "/api/v1/status"); strings.Contains(s, `"remote"`) {
			t.Errorf("remote access off, yet status has remote: %s", s)
		}
	}
}

// In a cluster, sessions of a VM also lists its serial ports that other
// members serve; a VM with ports nowhere is still a 404.
func TestSessionsElsewhere(t *testing.T) {
	since := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	h := New(Config{
		Server: fakeServer{[]vspc.PortInfo{{VMName: "web-1", VCUUID: "u1", ServiceURI: "com1", Direction: "client", State: "attached", Via: "m3"}}},
		Owners: func(_ context.Context, vm string) ([]PortOwner, error) {
			if vm == "web-1" || vm == "db-1" {
				return []PortOwner{{VM: vm, VCUUID: "u9", ServiceURI: "com2", Member: "m2", MemberAdmin: "10.0.0.12:13372", Since: since}}, nil
			}
			return nil, nil
		},
	})
	get := func(vm string) (int, SessionList) {
		req := httptest.NewRequest("GET", "/api/v1/sessions?vm="+vm, nil)
		req.Host = "127.0.0.1:13372"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var l SessionList
		json.Unmarshal(rec.Body.Bytes(), &l)
		return rec.Code, l
	}
	code, l := get("web-1")
	if code != 200 || len(l.Sessions) != 1 || l.Sessions[0].Via != "m3" || len(l.Elsewhere) != 1 || l.Elsewhere[0].Member != "m2" {
		t.Fatalf("web-1: %d %+v", code, l)
	}
	if code, l = get("db-1"); code != 200 || len(l.Sessions) != 0 || len(l.Elsewhere) != 1 || l.Elsewhere[0].MemberAdmin != "10.0.0.12:13372" {
		t.Fatalf("db-1 (served elsewhere only): %d %+v", code, l)
	}
	if code, _ = get("nobody"); code != 404 {
		t.Fatalf("nobody: %d, want 404", code)
	}
}
