package configs

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"
)

// addSeedFiles adds every example and testdata config to the corpus.
func addSeedFiles(f *testing.F, add func(data []byte)) {
	f.Helper()
	for _, pattern := range []string{"*.toml", "testdata/*.toml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			add(data)
		}
	}
}

// FuzzParse checks that Parse never panics, and that what it returns is
// well formed: a usable Config, or *Error entries with the prefix.
func FuzzParse(f *testing.F) {
	addSeedFiles(f, func(data []byte) { f.Add(data) })
	f.Add([]byte("vspc = { listen = \"127.0.0.1:1\" }\nroute = [{service=\"a\",device=\"/dev/x\"}]\n"))
	f.Add([]byte("[vspc]\nlisten=\"h:1\"\n[[route]]\nname='''\n[[route]]\n'''\n[route.x]\n"))
	f.Add([]byte("a.\"b.c\".d = [[1,{x=[2]}],\n# c\n]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			var m *multierror.Error
			if !errors.As(err, &m) || len(m.Errors) == 0 {
				t.Fatalf("error %T is not a non-empty *multierror.Error: %v", err, err)
			}
			for _, e := range m.Errors {
				ce, ok := e.(*Error)
				if !ok || !strings.HasPrefix(ce.Error(), "configs: fuzz.toml") || ce.Line < 0 {
					t.Fatalf("malformed entry %T %v", e, e)
				}
			}
			if c != nil {
				t.Fatal("both a Config and an error")
			}
			return
		}
		if c.ProxyURI() == "" {
			t.Error("valid config without a proxy URI")
		}
		if c.VMotion.FlushTimeout.Duration >= MaxFlushTimeout || c.VSPC.MaxSubnegotiation < MinSubnegotiation {
			t.Error("validation let a bad value through")
		}
		c.Allow().AllowName("localhost", 23)
		c.Allow().AllowAddr(netip.MustParseAddr("127.0.0.1"), 23)
		for _, r := range c.Routes {
			if r.Name == "" || r.Target().Kind == 0 || r.Settings().Baud == 0 {
				t.Errorf("route not fully parsed: %+v", r)
			}
			if _, ok := c.MatchRoute(RouteQuery{ServiceURI: r.Service, VMName: r.VM, VCUUID: r.UUID}); !ok && !strings.ContainsAny(r.Service+r.VM, `*?[\`) {
				t.Errorf("route %q does not match its own literal matchers", r.Name)
			}
		}
		// The line scanner must not panic on valid TOML either.
		scanKeyLines(string(data)).find("route[0].device")
	})
}

// FuzzParseAllow checks that ParseAllow never panics, and that an accepted
// rule set's String re-parses to the same rules.
func FuzzParseAllow(f *testing.F) {
	addSeedFiles(f, func(data []byte) {
		c, err := Parse("seed.toml", data)
		if err != nil {
			return
		}
		for _, e := range c.Policy.ConnectAllow {
			f.Add(e, "10.20.1.1", 4001)
		}
	})
	for _, e := range []string{"[::1]/128", "::1", "[fd00::]/8:23", "10.1.0.0/16:4001-4004", "*.console.example:*", "[::ffff:10.0.0.0]/104:1-2", "a:b:c", "["} {
		f.Add(e, "::ffff:10.0.0.1", 23)
	}
	f.Fuzz(func(t *testing.T, entries, host string, port int) {
		a, err := ParseAllow(strings.Split(entries, "\n"))
		if err != nil {
			if a != nil {
				t.Fatal("both an Allow and an error")
			}
			return
		}
		byName := a.AllowName(host, port)
		if ip, err := netip.ParseAddr(host); err == nil && byName != a.AllowAddr(ip, port) {
			t.Errorf("AllowName(%q) = %v disagrees with AllowAddr", host, byName)
		}
		if (port < 1 || port > 65535) && byName {
			t.Errorf("port %d allowed", port)
		}
		if a.Empty() {
			if byName {
				t.Error("empty Allow allowed something")
			}
			return
		}
		b, err := ParseAllow(strings.Split(a.String(), ", "))
		if err != nil {
			t.Fatalf("String %q does not re-parse: %v", a.String(), err)
		}
		if b.String() != a.String() {
			t.Fatalf("String round trip: %q -> %q", a.String(), b.String())
		}
		if b.AllowName(host, port) != byName {
			t.Fatalf("re-parsed rules %q decide %q:%d differently", a.String(), host, port)
		}
	})
}

// FuzzScanKeyLines checks that the line scanner terminates without panicking
// on any input (Parse only runs it on valid TOML), and that every line it
// reports exists.
func FuzzScanKeyLines(f *testing.F) {
	addSeedFiles(f, func(data []byte) { f.Add(string(data)) })
	f.Add("a = [\"x\", {b = '''\n'''}, [1,\n2]]\n[[t]]\n[t.u]\nk=\"\\\"\"")
	f.Fuzz(func(t *testing.T, src string) {
		n := strings.Count(src, "\n") + 1
		for k, l := range scanKeyLines(src) {
			if l < 1 || l > n {
				t.Fatalf("key %q at line %d of %d", k, l, n)
			}
		}
	})
}
