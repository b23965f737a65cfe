package configs

import (
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"time"
)

// DefaultAdminListen is the default [admin] listen address: loopback only.
// (13371 is taken by convention by the telnets:// listener, see
// example.toml, so the admin endpoint sits one port above it.)
const DefaultAdminListen = "127.0.0.1:13372"

// Admin is the [admin] table: the HTTP endpoint for status, metrics and
// reload (package admin).
type Admin struct {
	// Listen is the host:port of the admin HTTP endpoint. Default
	// "127.0.0.1:13372"; "" turns the endpoint off. A listen host that is
	// not a loopback address requires a token.
	Listen string `toml:"listen"`
	// TLSCert and TLSKey are PEM files; when both are set the endpoint
	// serves HTTPS. Reloaded on SIGHUP.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// Token is the bearer token every request except /healthz and /readyz
	// must carry ("Authorization: Bearer TOKEN"). TokenFile names a file
	// holding it instead (read at start and on reload; surrounding
	// whitespace is ignored). At most one of the two may be set.
	Token     string `toml:"token"`
	TokenFile string `toml:"token_file"`
}

// ReadToken returns the bearer token: Token, or the contents of TokenFile
// (trimmed). It returns "" when neither is set (no authentication). An
// unreadable or empty token file is an error.
func (a *Admin) ReadToken() (string, error) {
	if a.TokenFile == "" {
		return a.Token, nil
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return "", fmt.Errorf("configs: admin.token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("configs: admin.token_file %s is empty", a.TokenFile)
	}
	return tok, nil
}

// Alerts is the [alerts] table: settings shared by every [[alert]] rule.
type Alerts struct {
	// Webhook is an http:// or https:// URL that receives a POST with a
	// JSON body {"vm", "pattern", "line", "time", …} for every alert that
	// passes the rate limit. Default "": no webhook.
	Webhook string `toml:"webhook"`
	// WebhookTimeout bounds one POST. Default 5s.
	WebhookTimeout Duration `toml:"webhook_timeout"`
	// RateLimit is how many alerts one VM may raise per RateWindow; the
	// rest are counted as suppressed. Default 5 per 1m.
	RateLimit  int      `toml:"rate_limit"`
	RateWindow Duration `toml:"rate_window"`
	// Queue is how many chunks of console output may wait for the matcher;
	// when it is full further chunks are skipped (counted), so matching
	// never slows forwarding. Default 4096.
	Queue int `toml:"queue"`
	// MaxLine is the longest line matched; longer lines are cut. Default
	// 4KiB.
	MaxLine Size `toml:"max_line"`
}

// Alert directions: whose output a rule watches.
const (
	AlertFromVM     = "vm"     // what the VM writes to its serial port (its console output)
	AlertFromDevice = "device" // what the device or remote system sends to the VM
	AlertFromBoth   = "both"
)

// AlertRule is one [[alert]] table: a regular expression matched on the
// console output of the VMs it applies to.
type AlertRule struct {
	// Name labels the rule in logs, metrics and webhooks. Default: the
	// pattern. Unique.
	Name string `toml:"name"`
	// Pattern is a Go regular expression (RE2 syntax) matched against each
	// line of console output, with escape sequences and control
	// characters removed. Required.
	Pattern string `toml:"pattern"`
	// VM is a glob on the VM name; Route names a [[route]]: the rule then
	// applies only to ports joined through it. Both default to "" (any).
	VM    string `toml:"vm"`
	Route string `toml:"route"`
	// From is "vm" (default), "device" or "both".
	From string `toml:"from"`

	re *regexp.Regexp
}

// Regexp returns the compiled Pattern.
func (r *AlertRule) Regexp() *regexp.Regexp { return r.re }

// MatchesVM reports whether the rule's vm glob admits name.
func (r *AlertRule) MatchesVM(name string) bool { return r.VM == "" || globMatch(r.VM, name) }

func adminDefaults() Admin { return Admin{Listen: DefaultAdminListen} }

func alertsDefaults() Alerts {
	return Alerts{
		WebhookTimeout: Duration{5 * time.Second},
		RateLimit:      5,
		RateWindow:     Duration{time.Minute},
		Queue:          4096,
		MaxLine:        4 * KiB,
	}
}

// validateAdmin checks [admin], [alerts] and [[alert]].
func (d *decoder) validateAdmin(c *Config) {
	a := &c.Admin
	if a.Listen != "" {
		if err := checkListen(a.Listen); err != nil {
			d.fail("admin.listen", err)
		} else {
			for _, o := range []struct{ key, addr string }{{"vspc.listen", c.VSPC.Listen}, {"vspc.tls_listen", c.VSPC.TLSListen}} {
				if listenersClash(a.Listen, o.addr) {
					d.errorf("admin.listen", "%s clashes with %s %s: give the admin endpoint its own port", a.Listen, o.key, o.addr)
				}
			}
			if a.Token == "" && a.TokenFile == "" && !isLoopbackListen(a.Listen) {
				d.errorf("admin.listen", "%s is not a loopback address: set token or token_file (the admin endpoint shows every VM and can reload the config)", a.Listen)
			}
		}
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		key := "admin.tls_key"
		if a.TLSCert == "" {
			key = "admin.tls_cert"
		}
		d.errorf(key, "tls_cert and tls_key go together")
	}
	if a.Token != "" && a.TokenFile != "" {
		d.errorf("admin.token_file", "set either token or token_file, not both")
	}
	if a.Token != "" && strings.TrimSpace(a.Token) != a.Token {
		d.errorf("admin.token", "must not start or end with white space")
	}

	al := &c.Alerts
	if al.Webhook != "" {
		u, err := url.Parse(al.Webhook)
		switch {
		case err != nil:
			d.errorf("alerts.webhook", "invalid URL %q: %w", al.Webhook, errors.Unwrap(err))
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			d.errorf("alerts.webhook", "%q: want an http:// or https:// URL", al.Webhook)
		}
	}
	d.positive("alerts.webhook_timeout", al.WebhookTimeout)
	d.positive("alerts.rate_window", al.RateWindow)
	if al.RateLimit < 1 || al.RateLimit > 1_000_000 {
		d.errorf("alerts.rate_limit", "%d is out of range 1..1000000", al.RateLimit)
	}
	if al.Queue < 16 || al.Queue > 1_000_000 {
		d.errorf("alerts.queue", "%d is out of range 16..1000000", al.Queue)
	}
	if al.MaxLine < 80 || al.MaxLine > MiB {
		d.errorf("alerts.max_line", "%s is out of range 80..1MiB", al.MaxLine)
	}

	routes := map[string]bool{}
	for _, r := range c.Routes {
		routes[r.Name] = true
	}
	names := map[string]int{}
	for i := range c.AlertRules {
		r := &c.AlertRules[i]
		rk := indexKey("alert", i)
		switch {
		case r.Pattern == "":
			if !d.bad[rk+".pattern"] {
				d.errorf(rk+".pattern", `required: a regular expression such as "Kernel panic|Call Trace"`)
			}
		default:
			re, err := regexp.Compile(r.Pattern)
			if err != nil {
				d.errorf(rk+".pattern", "%w", err)
			}
			r.re = re
		}
		if _, err := path.Match(r.VM, ""); err != nil {
			d.errorf(rk+".vm", "bad pattern %q: %w", r.VM, err)
		}
		if r.Route != "" && !routes[r.Route] {
			d.errorf(rk+".route", "no [[route]] is named %q", r.Route)
		}
		switch r.From {
		case "":
			r.From = AlertFromVM
		case AlertFromVM, AlertFromDevice, AlertFromBoth:
		default:
			d.errorf(rk+".from", `%q: want "vm", "device" or "both"`, r.From)
		}
		if r.Name == "" {
			r.Name = r.Pattern
		}
		if j, dup := names[r.Name]; dup && r.Name != "" {
			d.errorf(rk, "duplicate alert name %q (also alert[%d]); names must be unique", r.Name, j)
		} else {
			names[r.Name] = i
		}
	}
}

// listenersClash reports whether two listen addresses would fight over a
// port: the same port on the same host, or where either is a wildcard.
func listenersClash(a, b string) bool {
	if b == "" {
		return false
	}
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return wild(ha) || wild(hb) || strings.EqualFold(ha, hb)
}

// isLoopbackListen reports whether a listen address binds loopback only.
func isLoopbackListen(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Thumbprint returns the SHA-1 fingerprint of a DER certificate the way
// vSphere and OpenStack Nova write it in a telnets:// proxy URI: upper-case
// hex pairs separated by colons ("AB:CD:…", 59 characters), as printed by
// `openssl x509 -noout -fingerprint -sha1`.
func Thumbprint(der []byte) string {
	sum := sha1.Sum(der)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

// CertFileThumbprint reads the first certificate of a PEM file (the leaf of
// a chain) and returns its Thumbprint.
func CertFileThumbprint(certFile string) (string, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return "", fmt.Errorf("configs: %w", err)
	}
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return "", fmt.Errorf("configs: %s: no PEM CERTIFICATE block", certFile)
		}
		if blk.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
				return "", fmt.Errorf("configs: %s: %w", certFile, err)
			}
			return Thumbprint(blk.Bytes), nil
		}
	}
}

// LeafThumbprint returns the Thumbprint of a loaded key pair's leaf
// certificate ("" if it has none).
func LeafThumbprint(c *tls.Certificate) string {
	if c == nil || len(c.Certificate) == 0 {
		return ""
	}
	return Thumbprint(c.Certificate[0])
}

// TelnetsURI returns the proxy URI ESXi uses to reach a telnets://
// listener and pin its certificate, as OpenStack Nova configures it:
// "telnets://host:port#thumbprint=AB:CD:…". hostport is where VMs reach
// the listener.
func TelnetsURI(hostport, thumbprint string) string {
	return "telnets://" + hostport + "#thumbprint=" + thumbprint
}
