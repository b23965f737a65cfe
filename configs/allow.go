package configs

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// Allow is the parsed form of [policy] connect_allow: the targets a VM that
// asked for the client direction may make the bridge connect to. An Allow is
// immutable and safe for concurrent use. A nil or empty Allow allows
// nothing: the bridge is never an open relay by default.
//
// Rules come in two kinds:
//
//   - address rules, a CIDR or a single IP with an optional port spec:
//     "10.1.0.0/16", "127.0.0.1", "[::1]/128", "::1", "10.1.0.0/16:4001",
//     "10.1.0.0/16:4001-4004", "[fd00::]/8:23". An IPv6 rule with a port
//     spec must be bracketed. Without a port spec every port matches.
//   - name rules, a host glob (path.Match syntax, case-insensitive) and a
//     mandatory port spec: "nport-*.lab:4001", "*.console.example:*",
//     "localhost:*". A "*" also matches dots, so "*.example" matches
//     "a.b.example".
//
// A port spec is N, N-M (inclusive) or "*" (any port 1-65535). A CIDR with
// host bits set ("10.1.2.3/16") is rejected as a likely typo, as are IPv6
// zones; an IPv4-mapped rule ("[::ffff:10.0.0.0]/104") is stored as IPv4.
// An IPv6 rule never matches IPv4 addresses, so "[::]/0" is all of IPv6.
//
// Callers resolve names themselves and must apply this rule: a target given
// as host name H and port P may be dialled only if AllowName(H, P) is true,
// or if H resolves and AllowAddr(ip, P) is true for every address it
// resolved to (all of them, not just the one dialled, so a name cannot
// smuggle in an address outside the allowed networks). A target given as an
// IP literal needs AllowAddr; AllowName accepts IP literals too and checks
// them against the address rules only.
type Allow struct {
	addrs []addrRule
	names []nameRule
}

type portRange struct{ lo, hi uint16 } // inclusive; {1, 65535} is "*"

// allPorts returns the range a "*" port spec (or none, on an address rule)
// stands for.
func allPorts() portRange { return portRange{1, 65535} }

func (r portRange) match(port int) bool { return port >= int(r.lo) && port <= int(r.hi) }

func (r portRange) String() string {
	switch {
	case r == allPorts():
		return "*"
	case r.lo == r.hi:
		return strconv.Itoa(int(r.lo))
	}
	return strconv.Itoa(int(r.lo)) + "-" + strconv.Itoa(int(r.hi))
}

type addrRule struct {
	prefix netip.Prefix // masked; IPv4 rules are 4-byte prefixes
	ports  portRange
}

func (r addrRule) String() string {
	s := r.prefix.String()
	if r.prefix.Addr().Is6() {
		s = "[" + r.prefix.Addr().String() + "]/" + strconv.Itoa(r.prefix.Bits())
	}
	if r.ports != allPorts() {
		s += ":" + r.ports.String()
	}
	return s
}

type nameRule struct {
	pattern string // lower case, no trailing dot
	ports   portRange
}

func (r nameRule) String() string { return r.pattern + ":" + r.ports.String() }

// ParseAllow parses connect_allow entries (see Allow for the grammar). Every
// bad entry is reported, as a *multierror.Error with one error per entry,
// each naming the entry. An empty list gives an Allow that allows nothing.
func ParseAllow(entries []string) (*Allow, error) {
	a := &Allow{}
	var errs []error
	for i, e := range entries {
		if err := a.add(e); err != nil {
			errs = append(errs, fmt.Errorf("configs: connect_allow[%d]: %w", i, err))
		}
	}
	if len(errs) > 0 {
		return nil, &multierror.Error{Errors: errs, ErrorFormat: formatErrorList}
	}
	return a, nil
}

// add parses one entry and appends its rule.
func (a *Allow) add(entry string) error {
	ar, nr, isAddr, err := parseAllowEntry(entry)
	if err != nil {
		return fmt.Errorf("%q: %w", entry, err)
	}
	if isAddr {
		a.addrs = append(a.addrs, ar)
	} else {
		a.names = append(a.names, nr)
	}
	return nil
}

func parseAllowEntry(e string) (ar addrRule, nr nameRule, isAddr bool, err error) {
	if e == "" {
		return ar, nr, false, errors.New("empty entry")
	}
	if strings.TrimSpace(e) != e {
		return ar, nr, false, errors.New("leading or trailing space")
	}
	ports := allPorts()
	var bits string
	switch {
	case e[0] == '[':
		// [v6] or [v6]/bits, each optionally followed by :ports.
		end := strings.IndexByte(e, ']')
		if end < 0 {
			return ar, nr, false, errors.New("missing ']'")
		}
		addr, rest := e[1:end], e[end+1:]
		if a, err := netip.ParseAddr(addr); err != nil || !a.Is6() || a.Zone() != "" {
			return ar, nr, false, fmt.Errorf("%q is not an IPv6 address", addr)
		}
		if r, ok := strings.CutPrefix(rest, "/"); ok {
			bits, rest, _ = strings.Cut(r, ":")
			if strings.Contains(r, ":") {
				rest = ":" + rest
			}
			if bits == "" {
				return ar, nr, false, errors.New("empty prefix length after '/'")
			}
		}
		if rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return ar, nr, false, fmt.Errorf("unexpected %q after address", rest)
			}
			if ports, err = parsePortRange(p); err != nil {
				return ar, nr, false, err
			}
		}
		ar, err = makeAddrRule(addr, bits, ports)
		return ar, nr, true, err
	case strings.Contains(e, "/"):
		// v4/bits[:ports] or v6/bits (a v6 rule with ports must be bracketed).
		addr, rest, _ := strings.Cut(e, "/")
		a, perr := netip.ParseAddr(addr)
		if perr != nil {
			return ar, nr, false, fmt.Errorf("%q is not an IP address (host patterns cannot contain '/')", addr)
		}
		bits = rest
		if b, p, ok := strings.Cut(rest, ":"); ok {
			if a.Is6() {
				return ar, nr, false, fmt.Errorf("an IPv6 rule with a port must be bracketed: [%s]/%s", addr, rest)
			}
			bits = b
			if ports, err = parsePortRange(p); err != nil {
				return ar, nr, false, err
			}
		}
		if bits == "" {
			return ar, nr, false, errors.New("empty prefix length after '/'")
		}
		ar, err = makeAddrRule(addr, bits, ports)
		return ar, nr, true, err
	}
	if _, perr := netip.ParseAddr(e); perr == nil {
		ar, err = makeAddrRule(e, "", allPorts())
		return ar, nr, true, err
	}
	host, p, ok := strings.Cut(e, ":")
	if !ok {
		return ar, nr, false, errors.New("not an IP or CIDR, and a host pattern needs a port spec (host:N, host:N-M or host:*)")
	}
	if strings.Contains(p, ":") {
		return ar, nr, false, errors.New("not an IP address, CIDR or host:ports (an IPv6 rule with a port must be bracketed)")
	}
	if ports, err = parsePortRange(p); err != nil {
		return ar, nr, false, err
	}
	if _, perr := netip.ParseAddr(host); perr == nil {
		ar, err = makeAddrRule(host, "", ports)
		return ar, nr, true, err
	}
	pat, err := parseHostPattern(host)
	if err != nil {
		return ar, nr, false, err
	}
	return ar, nameRule{pattern: pat, ports: ports}, false, nil
}

func makeAddrRule(addr, bits string, ports portRange) (addrRule, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addrRule{}, fmt.Errorf("%q is not an IP address", addr)
	}
	if a.Zone() != "" {
		return addrRule{}, fmt.Errorf("%q: zones are not allowed", addr)
	}
	n := a.BitLen()
	if bits != "" {
		n, err = strconv.Atoi(bits)
		if err != nil || n < 0 || n > a.BitLen() || bits[0] == '+' || (len(bits) > 1 && bits[0] == '0') {
			return addrRule{}, fmt.Errorf("prefix length %q: want 0..%d", bits, a.BitLen())
		}
	}
	p := netip.PrefixFrom(a, n)
	if m := p.Masked(); m != p {
		return addrRule{}, fmt.Errorf("%s/%d has host bits set (did you mean %s?)", addr, n, m)
	}
	if a.Is4In6() && n >= 96 {
		p = netip.PrefixFrom(a.Unmap(), n-96)
	}
	return addrRule{prefix: p, ports: ports}, nil
}

func parsePortRange(s string) (portRange, error) {
	if s == "*" {
		return allPorts(), nil
	}
	port := func(p string) (uint16, error) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || p[0] == '+' || p[0] == '0' {
			return 0, fmt.Errorf("port %q: want 1..65535", p)
		}
		return uint16(n), nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	l, err := port(lo)
	if err != nil {
		return portRange{}, err
	}
	if !isRange {
		return portRange{l, l}, nil
	}
	h, err := port(hi)
	if err != nil {
		return portRange{}, err
	}
	if h < l {
		return portRange{}, fmt.Errorf("port range %q: start is after end", s)
	}
	return portRange{l, h}, nil
}

// parseHostPattern validates a host glob and returns it in lower case
// without a trailing dot.
func parseHostPattern(h string) (string, error) {
	p := strings.TrimSuffix(strings.ToLower(h), ".")
	if p == "" {
		return "", errors.New("empty host pattern")
	}
	if _, err := netip.ParseAddr(p); err == nil {
		// "0.0.0.0." would print as an address rule and parse back as one.
		return "", fmt.Errorf("host pattern %q is an IP address with a trailing dot; write the address without it", h)
	}
	if strings.HasPrefix(h, ".") || strings.Contains(h, "..") {
		// An empty label can name no host (and "..", trimmed of its
		// trailing dot, would print as a pattern that does not parse).
		return "", fmt.Errorf("host pattern %q: empty label", h)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-._*?[]^!", c) >= 0) {
			return "", fmt.Errorf("host pattern %q: character %q not allowed", h, c)
		}
	}
	if _, err := path.Match(p, ""); err != nil {
		return "", fmt.Errorf("host pattern %q: %w", h, err)
	}
	return p, nil
}

// AllowAddr reports whether an address rule allows ip:port. IPv4-mapped IPv6
// addresses are treated as IPv4 and zones are ignored. Ports outside 1-65535
// are never allowed.
func (a *Allow) AllowAddr(ip netip.Addr, port int) bool {
	if a == nil || !ip.IsValid() || port < 1 || port > 65535 {
		return false
	}
	ip = ip.WithZone("").Unmap()
	for _, r := range a.addrs {
		if r.ports.match(port) && r.prefix.Contains(ip) {
			return true
		}
	}
	return false
}

// AllowName reports whether a name rule allows host:port. The match is
// case-insensitive and ignores a trailing dot. If host is an IP literal
// (optionally bracketed) it is checked with AllowAddr instead: name rules
// never match addresses.
func (a *Allow) AllowName(host string, port int) bool {
	if a == nil || port < 1 || port > 65535 {
		return false
	}
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip, err := netip.ParseAddr(h); err == nil {
		return a.AllowAddr(ip, port)
	}
	h = strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "" {
		return false
	}
	for _, r := range a.names {
		if !r.ports.match(port) {
			continue
		}
		if ok, _ := path.Match(r.pattern, h); ok {
			return true
		}
	}
	return false
}

// Empty reports whether a has no rules, so that it allows nothing.
func (a *Allow) Empty() bool { return a == nil || len(a.addrs)+len(a.names) == 0 }

// String returns the rules in canonical form, address rules first, separated
// by ", ". Each rule re-parses with ParseAllow to the same rule.
func (a *Allow) String() string {
	if a == nil {
		return ""
	}
	var b strings.Builder
	for _, r := range a.addrs {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	for _, r := range a.names {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	return b.String()
}
