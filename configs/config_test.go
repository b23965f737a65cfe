package configs

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/hashicorp/go-multierror"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// configErrors unpacks the error Parse returns.
func configErrors(t *testing.T, err error) []*Error {
	t.Helper()
	var m *multierror.Error
	if !errors.As(err, &m) {
		t.Fatalf("error is %T, want *multierror.Error: %v", err, err)
	}
	var out []*Error
	for _, e := range m.Errors {
		ce, ok := e.(*Error)
		if !ok {
			t.Fatalf("entry is %T, want *configs.Error: %v", e, e)
		}
		out = append(out, ce)
	}
	return out
}

func TestExampleFilesLoad(t *testing.T) {
	files, err := filepath.Glob("*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(files, "example.toml") || !slices.Contains(files, "production.toml") {
		t.Fatalf("example configs missing: %v", files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Fatalf("Load:\n%v", err)
			}
			if c.Source != f {
				t.Errorf("Source = %q, want %q", c.Source, f)
			}
			if c.Allow().Empty() {
				t.Errorf("connect_allow is empty; example configs should show it")
			}
			if !strings.HasPrefix(c.ProxyURI(), "telnet") {
				t.Errorf("ProxyURI = %q", c.ProxyURI())
			}
		})
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	if c.VSPC.Listen != "127.0.0.1:13370" {
		t.Errorf("listen = %q, want 127.0.0.1:13370", c.VSPC.Listen)
	}
	if got := c.ProxyURI(); got != "telnet://127.0.0.1:13370" {
		t.Errorf("ProxyURI = %q", got)
	}
	a := c.Allow()
	for _, ip := range []string{"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"} {
		if !a.AllowAddr(netip.MustParseAddr(ip), 4001) {
			t.Errorf("default config denies loopback %s", ip)
		}
	}
	for _, ip := range []string{"10.0.0.1", "192.168.1.1", "::2", "fe80::1", "0.0.0.0"} {
		if a.AllowAddr(netip.MustParseAddr(ip), 4001) {
			t.Errorf("default config allows non-loopback %s", ip)
		}
	}
	if a.AllowName("example.com", 23) {
		t.Errorf("default config allows example.com")
	}
	// Default returns a fresh Config each time.
	c.VSPC.Listen = "changed"
	if Default().VSPC.Listen != "127.0.0.1:13370" {
		t.Errorf("Default shares state between calls")
	}
	// ExampleTOML returns a copy.
	b := ExampleTOML()
	b[0] = 'X'
	if ExampleTOML()[0] == 'X' {
		t.Errorf("ExampleTOML returns shared bytes")
	}
}

// TestExampleDefaults checks that the values written in example.toml are
// the built-in defaults (except listen and connect_allow, which have none,
// and the demo route), so the file documents what leaving a key out means.
func TestExampleDefaults(t *testing.T) {
	ex := Default()
	min, err := Parse("min.toml", []byte("[vspc]\nlisten = \"127.0.0.1:13370\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	ex.Policy.ConnectAllow, min.Policy.ConnectAllow = nil, nil
	ex.Routes, min.Routes = nil, nil
	ex.allow, min.allow = nil, nil
	ex.Source, min.Source = "", ""
	if !reflect.DeepEqual(ex, min) {
		t.Errorf("example.toml values differ from defaults:\nexample: %+v\ndefault: %+v", ex, min)
	}
	if !min.Allow().Empty() {
		t.Errorf("default connect_allow is not empty")
	}
}

// TestExampleDocumentsEveryKey checks that example.toml mentions every key
// of the schema, each right after a comment.
func TestExampleDocumentsEveryKey(t *testing.T) {
	lines := strings.Split(string(ExampleTOML()), "\n")
	documented := map[string]bool{}
	keyRE := regexp.MustCompile(`^#? ?([a-z_]+) = `)
	table := ""
	for i, l := range lines {
		if strings.HasPrefix(l, "[") {
			table = strings.Trim(l, "[]")
			continue
		}
		m := keyRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		// the key, or the first of a group of keys, follows a comment
		j := i - 1
		for j >= 0 && keyRE.MatchString(lines[j]) {
			j--
		}
		if j < 0 || !strings.HasPrefix(lines[j], "#") {
			t.Errorf("example.toml:%d: %s.%s has no comment above it", i+1, table, m[1])
		}
		documented[table+"."+m[1]] = true
	}
	for _, sec := range []struct {
		name string
		v    any
	}{{"vspc", VSPC{}}, {"vmotion", VMotion{}}, {"policy", Policy{}}, {"log", Log{}}, {"route", Route{}}} {
		for _, k := range tableKeys(reflect.TypeOf(sec.v)) {
			if !documented[sec.name+"."+k] {
				t.Errorf("example.toml does not document %s.%s", sec.name, k)
			}
		}
	}
}

func TestMinimal(t *testing.T) {
	c, err := Parse("min.toml", []byte("[vspc]\nlisten = \"[::1]:13370\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.VSPC.HandshakeTimeout.Duration != 10*time.Second || c.VMotion.Buffer != MiB || !c.VMotion.Enabled ||
		c.Policy.ReconnectMin.Duration != 200*time.Millisecond || c.Log.Level != "info" || len(c.Routes) != 0 {
		t.Errorf("defaults not applied: %+v", c)
	}
	if got := c.ProxyURI(); got != "telnet://[::1]:13370" {
		t.Errorf("ProxyURI = %q", got)
	}
	if !c.Policy.AllowsDirection("client") || !c.Policy.AllowsDirection("server") || c.Policy.AllowsDirection("x") {
		t.Errorf("directions = %v", c.Policy.Directions)
	}
}

func TestBrokenReportsEverything(t *testing.T) {
	const file = "testdata/broken.toml"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse("broken.toml", data)
	if err == nil {
		t.Fatal("Parse accepted broken.toml")
	}
	errs := configErrors(t, err)

	// Every line marked ERR has an error, and every error is on such a line.
	want := map[int]bool{}
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "# ERR") {
			want[i+1] = true
		}
	}
	got := map[int]bool{}
	for _, e := range errs {
		got[e.Line] = true
		if !want[e.Line] {
			t.Errorf("unexpected error on unmarked line %d: %v", e.Line, e)
		}
		if e.File != "broken.toml" || e.Key == "" {
			t.Errorf("error without file or key: %#v", e)
		}
		if !strings.HasPrefix(e.Error(), "configs: broken.toml:") {
			t.Errorf("error text %q lacks prefix", e.Error())
		}
	}
	for l := range want {
		if !got[l] {
			t.Errorf("no error reported for line %d", l)
		}
	}

	// One error per line of text, and the exact text is pinned.
	text := err.Error() + "\n"
	if n := strings.Count(text, "\n"); n != len(errs) {
		t.Errorf("error text has %d lines for %d errors", n, len(errs))
	}
	golden := "testdata/broken.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantText, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if text != string(wantText) {
		t.Errorf("errors differ from %s (go test -update to rewrite):\ngot:\n%s\nwant:\n%s", golden, text, wantText)
	}
}

func TestSyntaxError(t *testing.T) {
	_, err := Load("testdata/syntax.toml")
	errs := configErrors(t, err)
	if len(errs) != 1 {
		t.Fatalf("got %d errors, want 1: %v", len(errs), err)
	}
	e := errs[0]
	if e.Line != 5 || e.File != "testdata/syntax.toml" {
		t.Errorf("error at %s:%d, want testdata/syntax.toml:5: %v", e.File, e.Line, e)
	}
	if !strings.HasPrefix(err.Error(), "configs: testdata/syntax.toml:5: toml: ") {
		t.Errorf("error text %q", err)
	}
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		t.Errorf("syntax error does not unwrap to toml.ParseError")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "configs: ") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

// parseErr parses src and returns its errors as "line: key: message" lines.
func parseErr(t *testing.T, src string) []string {
	t.Helper()
	_, err := Parse("t.toml", []byte(src))
	if err == nil {
		return nil
	}
	var out []string
	for _, e := range configErrors(t, err) {
		out = append(out, strings.TrimPrefix(e.Error(), "configs: t.toml:"))
	}
	return out
}

// wantErrors parses src and checks its errors in line order: as many as
// want has (none: src parses), each containing the want at its place.
func wantErrors(t *testing.T, src string, want []string) {
	t.Helper()
	got := parseErr(t, src)
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range got {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("error %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

func TestParseErrors(t *testing.T) {
	const listen = "[vspc]\nlisten = \"127.0.0.1:13370\"\n"
	tests := []struct {
		name string
		src  string
		want []string // substrings, one per expected error, in order
	}{
		{"empty file", "", []string{"vspc.listen: required"}},
		{"listen without port", "[vspc]\nlisten = \"127.0.0.1\"\n", []string{"2: vspc.listen: want host:port"}},
		{"listen bad port", "[vspc]\nlisten = \"127.0.0.1:99999\"\n", []string{`2: vspc.listen: port "99999"`}},
		{"tls without cert", "[vspc]\ntls_listen = \":13371\"\n", []string{"1: vspc.tls_cert: required", "1: vspc.tls_key: required"}},
		{"tls ok", "[vspc]\ntls_listen = \":13371\"\ntls_cert = \"c\"\ntls_key = \"k\"\n", nil},
		{"proxy_uri http", listen + "proxy_uri = \"http://x:1\"\n", []string{"3: vspc.proxy_uri: "}},
		{"proxy_uri userinfo", listen + "proxy_uri = \"telnet://u:p@x:1\"\n", []string{"user info"}},
		{"proxy_uri no port", listen + "proxy_uri = \"telnet://x\"\n", []string{"missing port"}},
		{"proxy_uri telnets thumbprint", listen + "proxy_uri = \"telnets://vspc.example:13371#thumbprint=AA:BB\"\n", nil},
		{"negative keepalive", listen + "keepalive = \"-1s\"\n", []string{"3: vspc.keepalive: must not be negative"}},
		{"zero keepalive", listen + "keepalive = \"0s\"\ngrace_period = \"0s\"\n", nil},
		{"zero handshake", listen + "handshake_timeout = \"0s\"\n", []string{"vspc.handshake_timeout: must be positive"}},
		{"duration as int", listen + "handshake_timeout = 10\n", []string{`3: vspc.handshake_timeout: want a duration string such as "10s", got integer 10`}},
		{"max_sessions zero", listen + "max_sessions = 0\n", []string{"vspc.max_sessions: 0 is out of range"}},
		{"max_sessions string", listen + "max_sessions = \"many\"\n", []string{`vspc.max_sessions: want an integer, got string "many"`}},
		{"subneg too big", listen + "max_subnegotiation = 70000\n", []string{"70000 bytes is out of range 64..65536"}},
		{"buffer int", listen + "[vmotion]\nbuffer = 8192\n", nil},
		{"buffer small", listen + "[vmotion]\nbuffer = \"1KiB\"\n", []string{"4: vmotion.buffer: 1KiB is out of range 4KiB..1GiB"}},
		{"buffer unit", listen + "[vmotion]\nbuffer = \"1MB\"\n", nil},
		{"buffer bad unit", listen + "[vmotion]\nbuffer = \"1XB\"\n", []string{`unknown unit "XB"`}},
		{"buffer float", listen + "[vmotion]\nbuffer = 1.5\n", []string{"want a size"}},
		{"flush 5s", listen + "[vmotion]\nflush_timeout = \"5s\"\n", []string{"must be below 5s"}},
		{"section not a table", "vspc = 3\n", []string{"1: vspc: want a table ([vspc]), got integer 3"}},
		{"unknown top key", listen + "foo = 1\n", []string{`3: vspc.foo: unknown key (valid in [vspc]: listen, tls_listen`}},
		{"unknown table", listen + "[foo]\nbar = 1\n", []string{"3: foo: unknown key (valid at the top level: vspc, vmotion, policy, log, route"}},
		{"unknown route key", listen + "[[route]]\nservice = \"x\"\ndevice = \"/dev/ttyS0\"\n\n[[route]]\nservice = \"y\"\ndevice = \"/dev/ttyS1\"\nspeed = 9600\n",
			[]string{"10: route[1].speed: unknown key (valid in [[route]]: name, service"}},
		{"allow array elements", listen + "[policy]\nconnect_allow = [\n \"10.0.0.0/8\",\n 42,\n \"x\",\n]\n",
			[]string{"6: policy.connect_allow[1]: want a string, got integer 42", `7: policy.connect_allow[2]: "x": not an IP`}},
		{"allow not array", listen + "[policy]\nconnect_allow = \"10.0.0.0/8\"\n", []string{"4: policy.connect_allow: want an array of strings"}},
		{"directions empty", listen + "[policy]\ndirections = []\n", []string{"policy.directions: must list"}},
		{"directions dup", listen + "[policy]\ndirections = [\"client\", \"client\"]\n", []string{`4: policy.directions[1]: "client" is listed twice`}},
		{"reconnect min only", listen + "[policy]\nreconnect_min = \"1m\"\n", []string{"4: policy.reconnect_min: reconnect_max 30s is below reconnect_min 1m0s"}},
		{"log format", listen + "[log]\nformat = \"xml\"\n", []string{`log.format: "xml": want text or json`}},
		{"dotted keys", "vspc.listen = \"127.0.0.1:1\"\nvspc.keepalive = \"x\"\n", []string{`2: vspc.keepalive: time: invalid duration "x"`}},
		{"inline table", "vspc = { listen = \"127.0.0.1:1\", keepalive = \"x\" }\n", []string{`1: vspc.keepalive: time: invalid duration "x"`}},
		{"route inline array", "route = [\n  { service = \"a\", device = \"tcp://h:1\" },\n  { service = \"b\", device = \"tcp://h\" },\n]\n" + listen,
			[]string{`3: route[1].device: device "tcp://h": missing port`}},
		{"route not tables", "route = 1\n" + listen, []string{"1: route: want an array of tables"}},
		{"route no matcher no device", listen + "[[route]]\nname = \"x\"\n", []string{"3: route[0]: needs at least one matcher", "3: route[0].device: required"}},
		// Found by FuzzParse: uuid = "" (any VM) passed for a matcher.
		{"route empty uuid only", listen + "[[route]]\nuuid = \"\"\ndevice = \"/0\"\n", []string{"3: route[0]: needs at least one matcher"}},
		{"route bad uuid only", listen + "[[route]]\nuuid = \"x\"\ndevice = \"/0\"\n", []string{"4: route[0].uuid: invalid UUID \"x\""}},
		{"route bad glob", listen + "[[route]]\nservice = \"[\"\ndevice = \"/dev/ttyS0\"\n", []string{`4: route[0].service: bad pattern "["`}},
		{"route flow twice", listen + "[[route]]\nservice = \"a\"\ndevice = \"/dev/ttyS0\"\nsettings = \"9600 8N1 rtscts\"\nflow = \"none\"\n", []string{"7: route[0].flow: flow control is also given in settings"}},
		{"route bad flow", listen + "[[route]]\nservice = \"a\"\ndevice = \"/dev/ttyS0\"\nflow = \"hw\"\n", []string{`6: route[0].flow: rfc2217: invalid flow control "hw"`}},
		{"route query and settings", listen + "[[route]]\nservice = \"a\"\ndevice = \"serial:///dev/ttyS0?baud=115200\"\nsettings = \"9600 8N1\"\n", []string{"5: route[0].device: line settings are given both"}},
		{"route bad query", listen + "[[route]]\nservice = \"a\"\ndevice = \"serial:///dev/ttyS0?speed=1\"\n", []string{`5: route[0].device: device "serial:///dev/ttyS0?speed=1": unknown parameter "speed"`}},
		{"route default names collide", listen + "[[route]]\nservice = \"a\"\ndevice = \"/dev/ttyS0\"\n[[route]]\nservice = \"a\"\ndevice = \"/dev/ttyS1\"\n", []string{`6: route[1]: duplicate route name "a" (also route[0])`}},
		{"route multiline string", listen + "[[route]]\nname = \"\"\"\nx = 1\n[[route]]\n\"\"\"\nservice = \"a\"\ndevice = \"ftp://h:1\"\n", []string{"9: route[0].device: "}},
		{"crlf", "[vspc]\r\nlisten = \"127.0.0.1:1\"\r\n\r\nkeepalive = \"x\"\r\n", []string{`4: vspc.keepalive: time: invalid duration "x"`}},
		{"bom", "\uFEFFvspc.listen = \"\"\n", []string{"1: vspc.listen: required"}},
		{"float", "[vspc]\nlisten = 1.5\n", []string{"2: vspc.listen: want a string, got float 1.5"}},
		{"bool", "[vspc]\nlisten = true\n", []string{"2: vspc.listen: want a string, got boolean true"}},
		{"array", "[vspc]\nlisten = [1]\n", []string{"2: vspc.listen: want a string, got an array"}},
		{"table", "[vspc]\nlisten = {a = 1}\n", []string{"2: vspc.listen: want a string, got a table"}},
		{"datetime", "[vspc]\nlisten = 1979-05-27T07:32:00Z\n", []string{"2: vspc.listen: want a string, got a date/time"}},
		{"bool as int", listen + "[vmotion]\nenabled = 1\n", []string{"4: vmotion.enabled: want true or false, got integer 1"}},
		{"literal key", listen + "'lit.key' = 1\n", []string{`3: vspc."lit.key": unknown key`}},
		{"multiline literal", listen + "proxy_uri = '''\nfoo = 1'''\nkeepalive = \"x\"\n", []string{"3: vspc.proxy_uri", "5: vspc.keepalive"}},
		{"route wrong types", listen + "[[route]]\nservice = 1\ndevice = 2\n", []string{"4: route[0].service: want a string", "5: route[0].device: want a string"}},
		{"quoted key", listen + "\"we ird\" = 1\n", []string{`3: vspc."we ird": unknown key`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErrors(t, tt.src, tt.want) })
	}
}

// TestRoundTrip encodes parsed configs with toml and parses the result:
// Duration and Size marshal to text Parse reads back, and the Config comes
// back the same.
func TestRoundTrip(t *testing.T) {
	for _, f := range []string{"example.toml", "production.toml"} {
		c, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(c); err != nil {
			t.Fatalf("%s: encode: %v", f, err)
		}
		back, err := Parse(f, buf.Bytes())
		if err != nil {
			t.Fatalf("%s: re-parse:\n%v\n%s", f, err, buf.String())
		}
		if !reflect.DeepEqual(c, back) {
			t.Errorf("%s: round trip differs:\n%+v\n%+v", f, c, back)
		}
	}
}

func TestProxyURI(t *testing.T) {
	for _, tt := range []struct{ src, want string }{
		{"[vspc]\nlisten = \"127.0.0.1:13370\"\n", "telnet://127.0.0.1:13370"},
		{"[vspc]\nlisten = \"127.0.0.1:13370\"\nproxy_uri = \"telnet://vspc.example:23\"\n", "telnet://vspc.example:23"},
		{"[vspc]\ntls_listen = \"10.0.0.1:13371\"\ntls_cert = \"c\"\ntls_key = \"k\"\n", "telnets://10.0.0.1:13371"},
	} {
		c, err := Parse("t.toml", []byte(tt.src))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.ProxyURI(); got != tt.want {
			t.Errorf("ProxyURI = %q, want %q", got, tt.want)
		}
	}
	if got := (&Config{}).ProxyURI(); got != "" {
		t.Errorf("empty Config ProxyURI = %q", got)
	}
}

func TestRoutes(t *testing.T) {
	c, err := Load("production.toml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		q        RouteQuery
		name     string // "" = no match
		target   string
		settings string
	}{
		{RouteQuery{ServiceURI: "lab-router-1"}, "lab-router-1", "nport://nport-1.lab.example:4001", "9600 8N1"},
		{RouteQuery{ServiceURI: "lab-router-2?x=1"}, "lab-router-2", "tcp://nport-1.lab.example:4002", "9600 8N1"},
		{RouteQuery{ServiceURI: "lab-router-3"}, "", "", ""},
		{RouteQuery{VMName: "core-switch-a"}, "core-switch", "rfc2217://ser2net.lab.example:2001", "115200 8N1 rts/cts"},
		{RouteQuery{VCUUID: "421C7B3E-6E55-F0B4-8C2B-35B10C3C20CB"}, "bmc-debug", "serial:///dev/ttyUSB0?baud=9600&parity=even&databits=7&stopbits=1", "9600 7E1"},
		{RouteQuery{VCUUID: "42 1c 7b 3e 6e 55 f0 b4-8c 2b 35 b1 0c 3c 20 cb", ServiceURI: "lab-router-1"}, "lab-router-1", "nport://nport-1.lab.example:4001", "9600 8N1"},
		{RouteQuery{ServiceURI: "legacy-pbx"}, "legacy", "serial:///dev/ttyS0", "9600 8N1"},
		{RouteQuery{ServiceURI: "legacy/pbx"}, "", "", ""}, // * does not cross /
		{RouteQuery{VCUUID: "garbage"}, "", "", ""},
		{RouteQuery{}, "", "", ""},
	}
	for _, tt := range tests {
		r, ok := c.MatchRoute(tt.q)
		if ok != (tt.name != "") {
			t.Errorf("MatchRoute(%+v) ok = %v, want %v", tt.q, ok, tt.name != "")
			continue
		}
		if !ok {
			continue
		}
		if r.Name != tt.name || r.Target().String() != tt.target || r.Settings().String() != tt.settings {
			t.Errorf("MatchRoute(%+v) = %q %s %q, want %q %s %q", tt.q, r.Name, r.Target(), r.Settings(), tt.name, tt.target, tt.settings)
		}
	}
	if got := c.Routes[3].UUID; got != "421c7b3e-6e55-f0b4-8c2b-35b10c3c20cb" {
		t.Errorf("route uuid not normalised: %q", got)
	}
}

func TestRouteDefaultName(t *testing.T) {
	c, err := Parse("t.toml", []byte(`[vspc]
listen = "127.0.0.1:1"
[[route]]
service = "a-*"
device = "/dev/ttyS0"
[[route]]
service = "b"
vm = "v"
device = "/dev/ttyS1"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Routes[0].Name != "a-*" || c.Routes[1].Name != "service=b vm=v" {
		t.Errorf("names = %q, %q", c.Routes[0].Name, c.Routes[1].Name)
	}
	// a route with several matchers needs all of them
	if _, ok := c.MatchRoute(RouteQuery{ServiceURI: "b"}); ok {
		t.Errorf("matched with only one of two matchers")
	}
	if r, ok := c.MatchRoute(RouteQuery{ServiceURI: "b", VMName: "v"}); !ok || r.Name != "service=b vm=v" {
		t.Errorf("MatchRoute = %v, %v", r, ok)
	}
}

// TestRouteDevices: the config checks a route's device with the parser
// the bridge opens it with (package target), so what loads is what opens.
// The two grammars that came before disagreed; a device either accepted
// loads now, and the route's settings are the query's over the default.
func TestRouteDevices(t *testing.T) {
	tests := []struct {
		device   string
		settings string // "" = an error at route[0].device
	}{
		{"tcp://127.0.0.1:4001", "9600 8N1"},
		{"nport://10.0.0.5", "9600 8N1"},
		{"rfc2217://ser2net:2001/", "9600 8N1"},
		{"/dev/ttyS0", "9600 8N1"},
		{"serial:///dev/ttyUSB0?baud=115200&parity=E", "115200 8E1"},
		// The config checker refused these and the device layer took them:
		{"telnet://console.lab", "9600 8N1"},                        // port 23 by default
		{"tcp://127.0.0.1:4001?baud=19200&databits=7", "19200 7N1"}, // a query on any scheme
		{"serial:///dev/ttyS0?flow=hardware", "9600 8N1 rts/cts"},   // flow aliases
		{"serial:///dev/ttyS0?baud=45&STOPBITS=2", "45 8N2"},        // baud 1..2³²-1, keys in any case
		{"rfc2217://ser2net:02001", "9600 8N1"},                     // leading zeros in the port
		// The device layer took these and the config checker refused them;
		// none can have worked (DNS names, a directory):
		{"tcp://a..b:1", ""},
		{"tcp://-a:1", ""},
		{"/dev/", ""},
		{"tcp://host:1?q", ""},
		{"ftp://host:21", ""},
	}
	for _, tt := range tests {
		c, err := Parse("t.toml", []byte("[vspc]\nlisten = \"127.0.0.1:1\"\n[[route]]\nservice = \"a\"\ndevice = \""+tt.device+"\"\n"))
		if tt.settings == "" {
			if err == nil || !strings.Contains(err.Error(), "t.toml:5: route[0].device: device \""+tt.device+"\": ") {
				t.Errorf("device %q: %v, want an error naming route[0].device", tt.device, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("device %q: %v", tt.device, err)
			continue
		}
		r := c.Routes[0]
		want, err := target.Parse(tt.device)
		if err != nil || r.Target() != want {
			t.Errorf("device %q: Target() = %+v, want what the bridge opens: %+v, %v", tt.device, r.Target(), want, err)
		}
		if got := r.Settings().String(); got != tt.settings {
			t.Errorf("device %q: Settings() = %q, want %q", tt.device, got, tt.settings)
		}
	}
}

func TestSerialQuerySettings(t *testing.T) {
	c, err := Parse("t.toml", []byte(`[vspc]
listen = "127.0.0.1:1"
[[route]]
service = "a"
device = "serial:///dev/ttyUSB0?baud=57600&databits=7&parity=odd&stopbits=1.5&flow=xonxoff"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := rfc2217.Settings{Baud: 57600, DataSize: 7, Parity: rfc2217.ParityOdd, StopSize: rfc2217.Stop15, Flow: rfc2217.FlowXONXOFF}
	if got := c.Routes[0].Settings(); got != want {
		t.Errorf("Settings = %v, want %v", got, want)
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"64KiB", 64 << 10, true},
		{"1 MiB", 1 << 20, true},
		{"1mib", 1 << 20, true},
		{"2MB", 2_000_000, true},
		{"3GiB", 3 << 30, true},
		{"10B", 10, true},
		{"", 0, false},
		{"KiB", 0, false},
		{"-1", 0, false},
		{"1.5MiB", 0, false},
		{"1 TiB", 0, false},
		{"9223372036854775807", 1<<63 - 1, true},
		{"9223372036854775808", 0, false},
		{"9000000000GiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err == nil {
			back, err := ParseSize(got.String())
			if err != nil || back != got {
				t.Errorf("ParseSize(%q.String()=%q) = %d, %v", tt.in, got.String(), back, err)
			}
		}
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{File: "f.toml", Line: 3, Key: "vspc.listen", Err: errors.New("bad")}
	if got := e.Error(); got != "configs: f.toml:3: vspc.listen: bad" {
		t.Errorf("Error() = %q", got)
	}
	e = &Error{File: "f.toml", Key: "vspc.listen", Err: errors.New("bad")}
	if got := e.Error(); got != "configs: f.toml: vspc.listen: bad" {
		t.Errorf("Error() without line = %q", got)
	}
	if !errors.Is(e, e.Err) {
		t.Errorf("Error does not unwrap")
	}
}

func TestExampleTOMLIsEmbedded(t *testing.T) {
	disk, err := os.ReadFile("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk, ExampleTOML()) {
		t.Errorf("embedded example.toml differs from the file")
	}
}

func TestSlogLevel(t *testing.T) {
	for _, tt := range []struct {
		level string
		want  string
	}{{"debug", "DEBUG"}, {"info", "INFO"}, {"warn", "WARN"}, {"error", "ERROR"}, {"", "INFO"}} {
		if got := (Log{Level: tt.level}).SlogLevel().String(); got != tt.want {
			t.Errorf("SlogLevel(%q) = %s, want %s", tt.level, got, tt.want)
		}
	}
}

func TestRouteSettingsGiven(t *testing.T) {
	for _, c := range []struct {
		route string
		given bool
	}{
		{`device = "nport://np1"`, false},
		{`device = "nport://np1"` + "\nsettings = \"9600 8N1\"", true},
		{`device = "nport://np1"` + "\nflow = \"rtscts\"", true},
		{`device = "nport://np1?baud=115200"`, true},
	} {
		cfg, err := Parse("t.toml", []byte("[vspc]\nlisten = \"127.0.0.1:0\"\n[[route]]\nservice = \"x\"\n"+c.route+"\n"))
		if err != nil {
			t.Fatalf("%s: %v", c.route, err)
		}
		r := cfg.Routes[0]
		if r.SettingsGiven() != c.given {
			t.Errorf("%s: SettingsGiven() = %v, want %v", c.route, r.SettingsGiven(), c.given)
		}
		if r.Settings().Baud == 0 {
			t.Errorf("%s: Settings() %v is not complete", c.route, r.Settings())
		}
	}
}
