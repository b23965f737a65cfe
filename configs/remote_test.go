package configs

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// A bcrypt hash (cost 4) and an ed25519 authorized key for tests.
const (
	testHash = "$2a$04$ju15Okgb4JD183DCgYAvgOjrmo3FCMAAX0X4zWAu1yoTS6qJETf0q" // "test"
	testKey  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDrBILXMCNGY5qImKntN9x15gFDhVvS80f0Xd4gja7cc test@example"
)

func TestRemoteDefaults(t *testing.T) {
	c := Default()
	r := c.Remote
	if r.Enabled || r.Bind != "127.0.0.1" || r.PortScheme != "telnet" || r.Scrollback != 16*KiB ||
		r.LogMaxSize != 10*MiB || r.LogMaxFiles != 5 || r.LogBuffer != MiB || r.ClientQueue != 256*KiB ||
		r.Escape != "^Ec" || r.MaxClients != 16 || r.MaxSessions != 20000 || r.MaxUnauthenticated != 256 ||
		r.ClientOverflow != OverflowPause || r.ClientStall.Duration != 10*time.Second || r.LoginTimeout.Duration != time.Minute ||
		r.LoginMaxFailures != 5 || r.LoginWindow.Duration != 5*time.Minute || r.LoginDelay.Duration != time.Second || r.Open {
		t.Fatalf("defaults: %+v", r)
	}
	if got := string(r.EscapeBytes()); got != "\x05c" {
		t.Fatalf("escape %q", got)
	}
}

func TestRemoteFull(t *testing.T) {
	c, err := Parse("t.toml", []byte(`[vspc]
listen = "127.0.0.1:13370"
[remote]
enabled = true
bind = "0.0.0.0"
port_range = "7000-7099"
port_scheme = "telnets"
state_file = "/var/lib/vspc-bridge/remote-ports.json"
telnet_listen = "127.0.0.1:2300"
telnets_listen = ":2323"
ssh_listen = ":2222"
ssh_host_keys = ["/var/lib/vspc-bridge/ssh_host_ed25519_key", "/var/lib/vspc-bridge/ssh_host_rsa_key"]
tls_cert = "/etc/vspc-bridge/remote.crt"
tls_key = "/etc/vspc-bridge/remote.key"
scrollback = "64KiB"
log_dir = "/var/log/vspc-bridge/consoles"
log_max_size = "50MiB"
log_max_files = 10
log_buffer = "4MiB"
client_queue = "1MiB"
client_overflow = "drop"
client_stall = "30s"
escape = "^]x"
max_clients = 8
max_sessions = 1000
max_unauthenticated = 64
login_timeout = "30s"
login_max_failures = 3
login_window = "10m"
login_delay = "2s"

[[user]]
name = "alice"
password = "`+testHash+`"
ssh_keys = ["`+testKey+`"]
[[user.access]]
vm = "web-*"
mode = "rw"
[[user.access]]
vm = "*"
mode = "ro"

[[user]]
name = "ops"
ssh_keys = ["`+testKey+`"]
access = [{vm = "4210*", mode = "rw"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Remote
	if lo, hi := r.PortRangeBounds(); lo != 7000 || hi != 7099 {
		t.Fatalf("range %d-%d", lo, hi)
	}
	if string(r.EscapeBytes()) != "\x1dx" || r.MaxClients != 8 || r.LogMaxFiles != 10 || r.LoginWindow.Duration != 10*time.Minute ||
		r.ClientOverflow != OverflowDrop || r.ClientStall.Duration != 30*time.Second || r.MaxUnauthenticated != 64 {
		t.Fatalf("%+v", r)
	}
	u, ok := c.LookupUser("alice")
	if !ok || len(u.SSHPublicKeys()) != 1 {
		t.Fatalf("alice: %+v", u)
	}
	for _, tt := range []struct {
		user, vm, uuid, want string
		ok                   bool
	}{
		{"alice", "web-1", "", AccessRW, true},
		{"alice", "db-1", "", AccessRO, true},
		{"ops", "db-1", "42 10 00 00 00 00 00 00-00 00 00 00 00 00 00 01", AccessRW, true},
		{"ops", "db-1", "11111111-0000-0000-0000-000000000001", "", false},
		{"ops", "", "", "", false},
	} {
		u, _ := c.LookupUser(tt.user)
		got, ok := u.Right(tt.vm, tt.uuid)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s on %s/%s: %q %v", tt.user, tt.vm, tt.uuid, got, ok)
		}
	}
}

func TestRemoteErrors(t *testing.T) {
	const listen = "[vspc]\nlisten = \"127.0.0.1:1\"\n"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"ok", listen + "[remote]\nenabled = true\n", nil},
		{"port range", listen + "[remote]\nport_range = \"7100-7000\"\n", []string{`4: remote.port_range: "7100-7000": want LO-HI`}},
		{"single port", listen + "[remote]\nport_range = \"7000\"\n", nil},
		{"scheme", listen + "[remote]\nport_scheme = \"ssh\"\n", []string{`4: remote.port_scheme: "ssh": want "telnet", "telnets" or "tcp"`}},
		{"telnets no cert", listen + "[remote]\nport_scheme = \"telnets\"\ntelnets_listen = \":1\"\n", []string{`4: remote.port_scheme: "telnets" needs tls_cert`, "5: remote.telnets_listen: needs tls_cert"}},
		{"cert without key", listen + "[remote]\ntls_cert = \"c.pem\"\n", []string{"4: remote.tls_cert: tls_key is missing"}},
		{"bad listen", listen + "[remote]\nssh_listen = \"2222\"\nssh_host_keys = [\"k\"]\n", []string{"4: remote.ssh_listen: want host:port"}},
		{"ssh without keys", listen + "[remote]\nssh_listen = \":2222\"\n", []string{"4: remote.ssh_listen: needs ssh_host_keys"}},
		{"bind empty", listen + "[remote]\nbind = \"\"\n", []string{"4: remote.bind: must not be empty"}},
		{"open non-loopback", listen + "[remote]\nopen = true\nbind = \"0.0.0.0\"\n", []string{`4: remote.open: open (no login) is only allowed on loopback listeners, and remote.bind is "0.0.0.0:0"`}},
		{"open front door", listen + "[remote]\nopen = true\ntelnet_listen = \":23\"\n", []string{`remote.open: open (no login) is only allowed on loopback listeners, and remote.telnet_listen is ":23"`}},
		{"open marked", listen + "[remote]\nopen = true\nopen_non_loopback = true\nbind = \"0.0.0.0\"\n", nil},
		{"open loopback", listen + "[remote]\nopen = true\ntelnet_listen = \"localhost:2300\"\nbind = \"::1\"\n", nil},
		{"sizes", listen + "[remote]\nscrollback = \"17MiB\"\nclient_queue = \"1KiB\"\nlog_max_size = \"1KiB\"\n", []string{
			"4: remote.scrollback: 17MiB is out of range 0..16MiB", "5: remote.client_queue: 1KiB is out of range 4KiB..1GiB", "6: remote.log_max_size: 1KiB is out of range 64KiB..1GiB"}},
		{"counts", listen + "[remote]\nmax_clients = 0\nlog_max_files = -1\nlogin_max_failures = 0\n", []string{
			"4: remote.max_clients: 0 is out of range 1..1000", "5: remote.log_max_files: -1 is out of range 0..1000", "6: remote.login_max_failures: 0 is out of range 1..1000"}},
		{"overflow", listen + "[remote]\nclient_overflow = \"block\"\nclient_stall = \"0s\"\nmax_unauthenticated = 0\n", []string{
			`4: remote.client_overflow: "block": want "pause"`, "5: remote.client_stall: must be positive", "6: remote.max_unauthenticated: 0 is out of range 1..100000"}},
		{"escape caret", listen + "[remote]\nescape = \"^1\"\n", []string{`4: remote.escape: escape "^1": ^1 is not a control character`}},
		{"escape long", listen + "[remote]\nescape = \"^E^E^E^E^E\"\n", []string{"5 bytes, at most 4"}},
		{"escape off", listen + "[remote]\nescape = \"\"\n", nil},
		{"user ok", listen + "[[user]]\nname = \"a\"\npassword = \"" + testHash + "\"\n", nil},
		{"user bad", listen + "[[user]]\nname = \"a+b\"\npassword = \"plain\"\nssh_keys = [\"ssh-rsa nope\"]\n", []string{
			`4: user[0].name: "a+b": a user name cannot contain '+'`, "5: user[0].password: not a bcrypt hash", "6: user[0].ssh_keys[0]: not an authorized_keys line"}},
		{"user no creds", listen + "[[user]]\nname = \"a\"\n", []string{`3: user[0]: user "a" has neither password nor ssh_keys`}},
		{"user dup", listen + "[[user]]\nname = \"a\"\npassword = \"" + testHash + "\"\n[[user]]\nname = \"a\"\npassword = \"" + testHash + "\"\n", []string{`7: user[1].name: duplicate user "a" (also user[0])`}},
		{"user no name", listen + "[[user]]\npassword = \"" + testHash + "\"\n", []string{"3: user[0].name: required"}},
		{"access bad", listen + "[[user]]\nname = \"a\"\npassword = \"" + testHash + "\"\n[[user.access]]\nvm = \"[\"\nmode = \"admin\"\n[[user.access]]\nmode = \"ro\"\n", []string{
			`7: user[0].access[0].vm: bad pattern "["`, `8: user[0].access[0].mode: "admin": want "ro" or "rw"`, "9: user[0].access[1].vm: required"}},
		{"unknown remote key", listen + "[remote]\nport = 1\n", []string{"4: remote.port: unknown key (valid in [remote]: enabled, bind"}},
		{"unknown user key", listen + "[[user]]\nname = \"a\"\npassword = \"" + testHash + "\"\nrole = \"admin\"\n", []string{"6: user[0].role: unknown key (valid in [[user]]: name, password, ssh_keys, access)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErrors(t, tt.src, tt.want) })
	}
}

func TestParseEscape(t *testing.T) {
	for in, want := range map[string]string{"^Ec": "\x05c", "^]": "\x1d", "~.": "~.", "^?": "\x7f", "^^": "\x1e", "^e": "\x05", "": ""} {
		got, err := ParseEscape(in)
		if err != nil || string(got) != want {
			t.Errorf("ParseEscape(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"^", "\x05", "^1", "^E^E^E^E^E"} {
		if _, err := ParseEscape(in); err == nil {
			t.Errorf("ParseEscape(%q) accepted", in)
		}
	}
}

// TestExampleDocumentsRemote: example.toml sets every [remote] key but
// enabled, which it shows commented out (after a comment, checked by
// TestExampleDocumentsEveryKey's rules), and shows
// every [[user]] and access key in its commented example.
func TestExampleDocumentsRemote(t *testing.T) {
	ex := string(ExampleTOML())
	_, remote, ok := strings.Cut(ex, "\n[remote]\n")
	if !ok {
		t.Fatal("example.toml has no [remote] table")
	}
	if i := strings.Index(remote, "\n["); i >= 0 {
		remote = remote[:i]
	}
	for _, k := range tableKeys(reflect.TypeOf(Remote{})) {
		line := "\n" + k + " = "
		if k == "enabled" {
			// Shown commented out: left out, [web] listen turns it on
			// (TestWebTurnsRemoteOn).
			line = "\n# " + k + " = "
		}
		if !strings.Contains(remote, line) {
			t.Errorf("example.toml does not set remote.%s", k)
		}
	}
	for _, k := range tableKeys(reflect.TypeOf(User{})) {
		if !strings.Contains(ex, "\n# "+k+" = ") {
			t.Errorf("example.toml does not show user.%s", k)
		}
	}
	for _, k := range tableKeys(reflect.TypeOf(Access{})) {
		if !strings.Contains(ex, k+" = ") {
			t.Errorf("example.toml does not show access.%s", k)
		}
	}
}
