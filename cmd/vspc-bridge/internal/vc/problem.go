package vc

import "strings"

// Code names a kind of problem; it is stable and appears in the JSON output.
type Code string

// Problems the audit finds.
const (
	CodeNoProxy           Code = "no-proxy"                // URI backing without proxy URI: vMotion refused
	CodeProxyNotBridge    Code = "proxy-not-bridge"        // proxy URI names another address
	CodeProxyTLS          Code = "proxy-tls"               // telnets vs a bridge without TLS, or the reverse
	CodeProxyThumbprint   Code = "proxy-thumbprint"        // telnets pins a certificate that is not the bridge's
	CodeProxyUnpinned     Code = "proxy-unpinned"          // telnets pins none and the bridge's is self-signed (warning)
	CodeProxyUserinfo     Code = "proxy-userinfo"          // user/password inside the proxy URI
	CodeBadURI            Code = "bad-uri"                 // proxy URI is not telnet(s)://host:port
	CodeBadDirection      Code = "bad-direction"           // direction neither client nor server
	CodeNoRoute           Code = "no-route"                // client service URI: no route, not in connect_allow
	CodeDeviceShared      Code = "device-shared"           // two VMs claim one device
	CodeNotConnected      Code = "not-connected"           // powered on, port not connected
	CodeNotStartConnected Code = "not-start-connected"     // port will not connect at power-on
	CodeNoURIBacking      Code = "uri-backing-unsupported" // the host has no URI backing option
)

// Problems preflight finds.
const (
	CodeRulesetMissing  Code = "ruleset-missing"  // the host has no such firewall ruleset
	CodeRulesetDisabled Code = "ruleset-disabled" // the needed ruleset is off
	CodeAllowedIP       Code = "allowed-ip"       // the ruleset's allowed-IP list excludes the peer
	CodePortNotCovered  Code = "port-not-covered" // no enabled rule of the ruleset covers the port
	CodeDirect          Code = "direct-network"   // VM wired straight to the network
)

// Severity grades a Problem. Every problem counts (exit status 1, and
// provision refuses to write a port that has one); a warning is one the
// audit cannot be sure of, because it depends on something outside the
// vSphere API.
type Severity string

// Severities; the zero value is an error: the port does not work as configured.
const (
	SeverityError   Severity = ""
	SeverityWarning Severity = "warning" // may work, depending on what the audit cannot see
)

// Problem is one thing found wrong, with how to fix it. It is an error so that
// problems can be collected with go-multierror.
type Problem struct {
	Code     Code     `json:"code"`
	Severity Severity `json:"severity,omitempty"` // "" (an error) or "warning"
	VM       string   `json:"vm,omitempty"`
	Host     string   `json:"host,omitempty"`
	Port     string   `json:"port,omitempty"` // "serialport-<key>"
	Message  string   `json:"message"`
	Fix      string   `json:"fix"`
}

func (p *Problem) Error() string {
	return "vc: " + p.where() + ": " + p.code() + ": " + p.Message
}

// code is the code with the severity when it is not an error:
// "proxy-unpinned (warning)".
func (p *Problem) code() string {
	if p.Severity != SeverityError {
		return string(p.Code) + " (" + string(p.Severity) + ")"
	}
	return string(p.Code)
}

func (p *Problem) where() string {
	var w []string
	if p.VM != "" {
		w = append(w, p.VM)
	} else if p.Host != "" {
		w = append(w, p.Host)
	}
	if p.Port != "" {
		w = append(w, p.Port)
	}
	if len(w) == 0 {
		return "-"
	}
	return strings.Join(w, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shellJoin quotes args for a POSIX shell, so fix commands can be pasted.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@%+=,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
