package configs

import (
	"strings"
	"testing"
)

// FuzzParseOrigin: parseOrigin never panics, and what it accepts is in
// the form browsers send (lower case, http or https, no path, no default
// port) and parses to itself again.
func FuzzParseOrigin(f *testing.F) {
	for _, s := range []string{"https://console.example.com", "HTTPS://Console.Example.com:443", "http://[::1]:8080",
		"https://10.0.0.5:8443/", "console.example.com", "https://x/path", "ftp://x", "https://", "http://a@b", "https://[fe80::1%25eth0]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		norm, err := parseOrigin(s)
		if err != nil {
			return
		}
		if norm != strings.ToLower(norm) || !strings.HasPrefix(norm, "http://") && !strings.HasPrefix(norm, "https://") {
			t.Fatalf("parseOrigin(%q) = %q: not a lower-case http(s) origin", s, norm)
		}
		rest := norm[strings.Index(norm, "://")+3:]
		if rest == "" || strings.ContainsAny(rest, "/?#@") || strings.HasSuffix(norm, ":443") && strings.HasPrefix(norm, "https") || strings.HasSuffix(norm, ":80") && strings.HasPrefix(norm, "http:") {
			t.Fatalf("parseOrigin(%q) = %q", s, norm)
		}
		again, err := parseOrigin(norm)
		if err != nil || again != norm {
			t.Fatalf("parseOrigin(%q) = %q, which parses to %q, %v", s, norm, again, err)
		}
	})
}
