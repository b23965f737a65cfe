package remote

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/atomicfile"
)

// Schemes a per-VM listener speaks.
const (
	schemeTelnet  = "telnet"
	schemeTelnets = "telnets"
	schemeTCP     = "tcp"
)

// listenSpec is where a VM's service URI asks remote users to connect.
type listenSpec struct {
	scheme string // telnet, telnets or tcp
	port   int    // 0: none named; take one from [remote] port_range
}

// parseServiceURI reads a direction-server service URI. telnet://h:p,
// telnets://h:p and tcp://h:p name a port (the host is informational:
// the listener binds to [remote] bind). Anything else is a name such as
// "vSPC.py" or "web-1?port=com2", which gets a port from the range.
func parseServiceURI(uri, defScheme string) (listenSpec, error) {
	u, err := url.Parse(uri)
	if err == nil {
		switch s := strings.ToLower(u.Scheme); s {
		case schemeTelnet, schemeTelnets, schemeTCP:
			if p := u.Port(); p != "" {
				n, err := strconv.Atoi(p)
				if err != nil || n < 1 || n > 65535 {
					return listenSpec{}, fmt.Errorf("remote: service URI %q: port %q: want 1..65535", uri, p)
				}
				return listenSpec{scheme: s, port: n}, nil
			}
			return listenSpec{scheme: s}, nil
		}
	}
	return listenSpec{scheme: defScheme}, nil
}

// portStore keeps the ports assigned from [remote] port_range to VM
// serial ports that name none, so each keeps its port across reconnects
// and restarts. It is persisted as JSON in the state file (if any).
type portStore struct {
	path   string
	lo, hi int

	mu    sync.Mutex // guards ports
	ports map[string]portAssignment
}

type portAssignment struct {
	Port     int       `json:"port"`
	VM       string    `json:"vm"`
	Service  string    `json:"service"`
	Assigned time.Time `json:"assigned"`
	// LastSeen is when the serial port last attached, to within
	// seenResolution (older state files have none: Assigned stands in).
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// seen is when the assignment was last used.
func (a portAssignment) seen() time.Time {
	if a.LastSeen.After(a.Assigned) {
		return a.LastSeen
	}
	return a.Assigned
}

// seenResolution bounds state file writes: a serial port that attaches
// again updates LastSeen only when the recorded one is older than this
// (1,000 VMs reconnecting after a restart must not cost 1,000 fsyncs).
const seenResolution = time.Hour

type portState struct {
	Version int                       `json:"version"`
	Ports   map[string]portAssignment `json:"ports"` // by VC UUID (or "name:"+VM name) + " " + service URI
}

func loadPortStore(path string, lo, hi int) (*portStore, error) {
	s := &portStore{path: path, lo: lo, hi: hi, ports: map[string]portAssignment{}}
	if path == "" {
		return s, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remote: state file: %w", err)
	}
	var st portState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("remote: state file %s: %w", path, err)
	}
	for k, a := range st.Ports {
		if a.Port >= 1 && a.Port <= 65535 {
			s.ports[k] = a
		}
	}
	return s, nil
}

// ErrNoPortRange is returned for a name-only service URI when [remote]
// port_range is not set.
var ErrNoPortRange = errors.New("remote: no [remote] port_range for service URIs without a port")

// assign returns the listener for key: on its recorded port, or on the
// first free port of the range, which is then recorded. When every port of
// the range is assigned, the assignment seen longest ago whose port can be
// bound (its serial port is not attached now) is reclaimed for key:
// reclaimed then describes it, for the log. bind opens a listener on a
// port.
func (s *portStore) assign(key, vm, service string, bind func(port int) (net.Listener, error)) (ln net.Listener, reclaimed string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UTC()
	if a, ok := s.ports[key]; ok {
		ln, err := bind(a.Port)
		if err != nil {
			return nil, "", fmt.Errorf("remote: port %d, assigned to this VM serial port (state file), is not available: %w", a.Port, err)
		}
		if now.Sub(a.seen()) > seenResolution {
			a.LastSeen = now
			s.ports[key] = a
			s.saveLocked() // best effort: the assignment itself is unchanged
		}
		return ln, "", nil
	}
	if s.lo == 0 {
		return nil, "", ErrNoPortRange
	}
	taken := map[int]bool{}
	for _, a := range s.ports {
		taken[a.Port] = true
	}
	record := func(ln net.Listener, p int, old string) (net.Listener, string, error) {
		var prev portAssignment
		if old != "" {
			prev = s.ports[old]
			delete(s.ports, old)
		}
		s.ports[key] = portAssignment{Port: p, VM: vm, Service: service, Assigned: now, LastSeen: now}
		if err := s.saveLocked(); err != nil {
			ln.Close()
			delete(s.ports, key)
			if old != "" {
				s.ports[old] = prev
			}
			return nil, "", err
		}
		if old != "" {
			return ln, fmt.Sprintf("port %d reclaimed from VM %q (service URI %q), last seen %s", p, prev.VM, prev.Service, prev.seen().Format(time.RFC3339)), nil
		}
		return ln, "", nil
	}
	var lastErr error
	for p := s.lo; p <= s.hi; p++ {
		if taken[p] {
			continue
		}
		ln, err := bind(p)
		if err != nil {
			lastErr = err
			continue
		}
		return record(ln, p, "")
	}
	// The range is full: reclaim the port seen longest ago whose serial
	// port is not attached now (its listener would hold the port).
	type cand struct {
		key string
		a   portAssignment
	}
	var old []cand
	for k, a := range s.ports {
		if a.Port >= s.lo && a.Port <= s.hi {
			old = append(old, cand{k, a})
		}
	}
	slices.SortFunc(old, func(x, y cand) int {
		if c := x.a.seen().Compare(y.a.seen()); c != 0 {
			return c
		}
		return strings.Compare(x.key, y.key)
	})
	for _, o := range old {
		ln, err := bind(o.a.Port)
		if err != nil {
			lastErr = err
			continue
		}
		return record(ln, o.a.Port, o.key)
	}
	if lastErr != nil {
		return nil, "", fmt.Errorf("remote: no free port in port_range %d-%d (last error: %w)", s.lo, s.hi, lastErr)
	}
	return nil, "", fmt.Errorf("remote: no free port in port_range %d-%d: all %d are assigned and attached (state file %s)", s.lo, s.hi, s.hi-s.lo+1, s.path)
}

func (s *portStore) saveLocked() error {
	if s.path == "" {
		return nil
	}
	data, err := json.MarshalIndent(portState{Version: 1, Ports: s.ports}, "", "  ")
	if err != nil {
		return fmt.Errorf("remote: state file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return fmt.Errorf("remote: state file: %w", err)
	}
	if err := atomicfile.Write(s.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("remote: state file: %w", err)
	}
	return nil
}
