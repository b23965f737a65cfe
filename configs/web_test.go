package configs

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWebDefaults(t *testing.T) {
	w := Default().Web
	if w.Listen != "" || w.TLS() || w.SecureCookie || len(w.OriginList()) != 0 || w.SessionIdle.Duration != 30*time.Minute ||
		w.SessionMax.Duration != 12*time.Hour || w.MaxSessions != 1000 || w.MaxConsoles != 32 || w.Ping.Duration != 20*time.Second || w.WatchScrollback != 16*KiB {
		t.Fatalf("defaults: %+v", w)
	}
}

func TestWebFull(t *testing.T) {
	c, err := Parse("w.toml", []byte(`[vspc]
listen = "127.0.0.1:13370"
[remote]
enabled = true
[web]
listen = "0.0.0.0:8443"
tls_cert = "/etc/vspc-bridge/web.crt"
tls_key = "/etc/vspc-bridge/web.key"
origins = ["HTTPS://Console.Example.com:443", "http://[::1]:8080", "https://10.0.0.5:8443/"]
session_idle = "10m"
session_max = "8h"
max_sessions = 50
max_consoles = 4
ping = "45s"
watch_scrollback = "1MiB"
[[user]]
name = "alice"
password = "`+testHash+`"
`))
	if err != nil {
		t.Fatal(err)
	}
	w := c.Web
	want := []string{"https://console.example.com", "http://[::1]:8080", "https://10.0.0.5:8443"}
	if !slices.Equal(w.OriginList(), want) {
		t.Errorf("origins %q, want %q", w.OriginList(), want)
	}
	if !w.TLS() || w.SessionIdle.Duration != 10*time.Minute || w.SessionMax.Duration != 8*time.Hour || w.MaxSessions != 50 || w.MaxConsoles != 4 || w.Ping.Duration != 45*time.Second || w.WatchScrollback != MiB {
		t.Errorf("parsed: %+v", w)
	}
}

func TestWebErrors(t *testing.T) {
	const head = "[vspc]\nlisten = \"127.0.0.1:13370\"\n[remote]\nenabled = true\n" // [web] is on line 5
	user := "[[user]]\nname = \"a\"\npassword = \"" + testHash + "\"\n"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"ok loopback", head + "[web]\nlisten = \"127.0.0.1:13380\"\n", nil},
		{"ok localhost", head + "[web]\nlisten = \"localhost:13380\"\n", nil},
		{"ok tls off loopback", head + "[web]\nlisten = \"0.0.0.0:443\"\ntls_cert = \"c\"\ntls_key = \"k\"\n" + user, nil},
		{"remote left out", "[vspc]\nlisten = \"127.0.0.1:13370\"\n[web]\nlisten = \"127.0.0.1:13380\"\n", nil},
		{"remote off", "[vspc]\nlisten = \"127.0.0.1:13370\"\n[remote]\nenabled = false\n[web]\nlisten = \"127.0.0.1:13380\"\n", []string{
			"4: remote.enabled: false, but [web] listen is set: the web console shows remote access's consoles; remove this line ([web] listen turns remote access on) or set enabled = true"}},
		{"bad listen", head + "[web]\nlisten = \"13380\"\n", []string{"6: web.listen: want host:port"}},
		{"clash vspc", head + "[web]\nlisten = \"127.0.0.1:13370\"\n", []string{"6: web.listen: 127.0.0.1:13370 clashes with vspc.listen 127.0.0.1:13370"}},
		{"clash admin", head + "[web]\nlisten = \":13372\"\n", []string{
			"6: web.listen: :13372 clashes with admin.listen 127.0.0.1:13372",
			"6: web.listen: :13372 is not a loopback address: set tls_cert and tls_key",
			"6: web.listen: :13372 is not a loopback address: add a [[user]] with a password"}},
		{"no tls off loopback", head + "[web]\nlisten = \"0.0.0.0:8080\"\n" + user, []string{"6: web.listen: 0.0.0.0:8080 is not a loopback address: set tls_cert and tls_key"}},
		{"no user off loopback", head + "[web]\nlisten = \"10.0.0.1:443\"\ntls_cert = \"c\"\ntls_key = \"k\"\n", []string{"6: web.listen: 10.0.0.1:443 is not a loopback address: add a [[user]] with a password"}},
		{"cert without key", head + "[web]\ntls_cert = \"c\"\n", []string{"6: web.tls_cert: tls_key is missing"}},
		{"key without cert", head + "[web]\ntls_key = \"k\"\n", []string{"6: web.tls_key: tls_cert is missing"}},
		{"origins", head + "[web]\norigins = [\"console.example.com\", \"https://x/path\", \"ftp://x\", \"https://\", 7]\n", []string{
			`6: web.origins[0]: "console.example.com": want an origin`,
			`6: web.origins[1]: "https://x/path": an origin is scheme://host[:port]`,
			`6: web.origins[2]: "ftp://x": want an origin`,
			`6: web.origins[3]: "https://": no host`,
			`6: web.origins[4]: want a string, got integer 7`}},
		{"durations", head + "[web]\nsession_idle = \"0s\"\nsession_max = \"-1h\"\nping = \"100ms\"\n", []string{
			"6: web.session_idle: must be positive", "7: web.session_max: must be positive", "8: web.ping: 100ms is out of range 1s..10m0s"}},
		{"idle over max", head + "[web]\nsession_idle = \"2h\"\nsession_max = \"1h\"\n", []string{"6: web.session_idle: 2h0m0s is longer than session_max 1h0m0s"}},
		{"counts", head + "[web]\nmax_sessions = 0\nmax_consoles = 1001\n", []string{
			"6: web.max_sessions: 0 is out of range 1..100000", "7: web.max_consoles: 1001 is out of range 1..1000"}},
		{"watch scrollback", head + "[web]\nwatch_scrollback = \"17MiB\"\n", []string{"6: web.watch_scrollback: 17MiB is out of range 0..16MiB"}},
		{"unknown key", head + "[web]\nport = 1\n", []string{"6: web.port: unknown key (valid in [web]: listen, tls_cert, tls_key, origins"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErrors(t, tt.src, tt.want) })
	}
}

// TestExampleDocumentsWeb: example.toml sets every [web] key after a
// comment.
func TestExampleDocumentsWeb(t *testing.T) {
	_, web, ok := strings.Cut(string(ExampleTOML()), "\n[web]\n")
	if !ok {
		t.Fatal("example.toml has no [web] table")
	}
	if i := strings.Index(web, "\n["); i >= 0 {
		web = web[:i]
	}
	for _, k := range tableKeys(reflect.TypeOf(Web{})) {
		if !strings.Contains(web, "\n"+k+" = ") {
			t.Errorf("example.toml does not set web.%s", k)
		}
	}
}

// TestWebTurnsRemoteOn: the embedded config with [web] listen set (what
// a user following the README does) has remote access on, and without
// [web] listen it stays off.
func TestWebTurnsRemoteOn(t *testing.T) {
	ex := string(ExampleTOML())
	if Default().Remote.Enabled {
		t.Fatal("the embedded config turns remote access on")
	}
	src := strings.Replace(ex, "\n[web]\n", "\n[web]\nlisten = \"127.0.0.1:13380\"\n", 1)
	src = strings.Replace(src, "\nlisten = \"\"\n", "\n", 1) // the [web] table's own listen line
	c, err := Parse("web.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c.Web.Listen != "127.0.0.1:13380" || !c.Remote.Enabled {
		t.Fatalf("listen %q, remote enabled %v", c.Web.Listen, c.Remote.Enabled)
	}
}
