package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Kinds of list entries.
const (
	kindConsole = "console" // a direction-server port's console: open it
	kindLink    = "link"    // a port joined to a device or remote: watch it
)

// Entry is one VM serial port in the list (GET /api/consoles).
type Entry struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"` // console or link
	VM        string `json:"vm"`
	VCUUID    string `json:"vc_uuid"`
	Service   string `json:"service"`
	Direction string `json:"direction"` // server or client
	// State is the VM port's: attached, detached, vmotion.
	State string `json:"state"`
	// Paused: the console waits for a client that is slow to take its
	// output, and the VM is not read meanwhile ([remote] client_overflow
	// = "pause").
	Paused bool `json:"paused,omitempty"`
	// Listen is a console's per-VM listener ("telnet://127.0.0.1:7001").
	Listen string `json:"listen,omitempty"`
	// Device is what a link joins the port to, DeviceState its state
	// (connecting, up, down).
	Device      string `json:"device,omitempty"`
	DeviceState string `json:"device_state,omitempty"`
	// Users are the clients attached to a console, from every door.
	Users []User `json:"users"`
	// Right is the user's access to the VM: rw or ro.
	Right string `json:"right"`
	// Modes are the attach modes the user may ask for (a console), or
	// ["watch"] (a link the server can tap).
	Modes []string `json:"modes"`
	Log   bool     `json:"log"` // the console has a log file to download
}

// User is a client attached to a console.
type User struct {
	User  string    `json:"user"`
	Mode  string    `json:"mode"` // read-write, read-only, exclusive, exclusive-write
	Via   string    `json:"via"`  // telnet, telnets, tcp, ssh, web
	Peer  string    `json:"peer"`
	Since time.Time `json:"since"`
}

// List is the body of GET /api/consoles and of each list event.
type List struct {
	Consoles []Entry `json:"consoles"`
}

// snapshot is what the list is computed from, shared by every request
// for listTTL: one walk of the consoles, ports and links however many
// browsers ask.
type snapshot struct {
	at      time.Time
	entries []snapEntry
	byID    map[string]int
}

// snapEntry is an entry before a user's rights are applied.
type snapEntry struct {
	Entry
	key     string       // a console's key for Attach (remote.ConsoleInfo.Key)
	pkey    vspc.PortKey // a link's port, for Tap
	logFile string
}

// listTTL is how long a snapshot is reused.
const listTTL = 500 * time.Millisecond

type snapshotCache struct {
	src func() *snapshot
	now func() time.Time

	mu   sync.Mutex // guards last; held while a snapshot is collected
	last *snapshot
}

// invalidate makes the next get collect a new snapshot (someone attached
// or detached: the users shown change).
func (c *snapshotCache) invalidate() {
	c.mu.Lock()
	c.last = nil
	c.mu.Unlock()
}

func (c *snapshotCache) get() *snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || c.now().Sub(c.last.at) >= listTTL {
		c.last = c.src()
	}
	return c.last
}

// entryID names a port in URLs: stable across restarts, and not the VC
// UUID itself.
func entryID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:10])
}

func usersOf(cs []remote.ClientInfo) []User {
	out := make([]User, 0, len(cs))
	for _, c := range cs {
		out = append(out, User{User: c.User, Mode: c.Mode, Via: c.Via, Peer: c.Peer, Since: c.Since})
	}
	return out
}

// collect takes a snapshot of the consoles, ports and links.
func (s *Server) collect() *snapshot {
	snap := &snapshot{at: s.cfg.Now(), byID: map[string]int{}}
	ports := map[string]vspc.PortInfo{}
	for _, p := range s.cfg.Ports() {
		ports[vspc.PortKeyOf(p.VCUUID, p.VMName, p.ServiceURI).String()] = p
	}
	add := func(e snapEntry) {
		if _, dup := snap.byID[e.ID]; dup {
			return
		}
		snap.byID[e.ID] = len(snap.entries)
		snap.entries = append(snap.entries, e)
	}
	for _, c := range s.cfg.Consoles.Consoles() {
		key := c.Key
		add(snapEntry{key: key, logFile: c.LogFile, Entry: Entry{
			ID: entryID(key), Kind: kindConsole, VM: c.VMName, VCUUID: c.VCUUID, Service: c.ServiceURI,
			Direction: "server", State: c.State, Paused: c.Paused, Listen: c.Listen, Users: usersOf(c.Clients), Log: c.LogFile != "",
		}})
	}
	for _, d := range s.cfg.Devices() {
		pk := vspc.PortKeyOf(d.VCUUID, d.VMName, d.ServiceURI)
		st := "attached"
		if p, ok := ports[pk.String()]; ok {
			st = p.State
		}
		add(snapEntry{key: pk.String(), pkey: pk, Entry: Entry{
			ID: entryID(pk.String()), Kind: kindLink, VM: d.VMName, VCUUID: d.VCUUID, Service: d.ServiceURI,
			Direction: d.Direction, State: st, Device: d.Device, DeviceState: d.State, Users: s.watchers(pk.String()),
		}})
	}
	slices.SortStableFunc(snap.entries, func(a, b snapEntry) int {
		if c := strings.Compare(strings.ToLower(a.VM), strings.ToLower(b.VM)); c != 0 {
			return c
		}
		return strings.Compare(a.Service, b.Service)
	})
	for i, e := range snap.entries {
		snap.byID[e.ID] = i
	}
	return snap
}

// forUser applies u's rights to an entry: false when u may not see it.
func (s *Server) forUser(e snapEntry, u *configs.User) (Entry, bool) {
	right, ok := u.Right(e.VM, e.VCUUID)
	if !ok {
		return Entry{}, false
	}
	out := e.Entry
	out.Right = right
	switch {
	case e.Kind == kindLink && s.cfg.Taps != nil:
		out.Modes = []string{"watch"}
	case e.Kind == kindLink:
		out.Modes = []string{}
	case right == configs.AccessRW:
		out.Modes = []string{"rw", "ro", "x", "xw"}
	default:
		out.Modes = []string{"ro"}
	}
	return out, true
}

// list is the list as u sees it.
func (s *Server) list(u *configs.User) List {
	l := List{Consoles: []Entry{}}
	for _, e := range s.snap.get().entries {
		if v, ok := s.forUser(e, u); ok {
			l.Consoles = append(l.Consoles, v)
		}
	}
	return l
}

// find returns the entry id as u sees it, from a fresh snapshot when the
// cached one does not have it (a port that just appeared).
func (s *Server) find(id string, u *configs.User) (snapEntry, Entry, bool) {
	snap := s.snap.get()
	i, ok := snap.byID[id]
	if !ok {
		snap = s.collect()
		if i, ok = snap.byID[id]; !ok {
			return snapEntry{}, Entry{}, false
		}
	}
	e := snap.entries[i]
	v, ok := s.forUser(e, u)
	return e, v, ok
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	_, u := s.session(r)
	if u == nil {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	writeJSON(w, http.StatusOK, s.list(u))
}

// eventTick is how often an event stream looks for changes; eventKeepalive
// is how often an unchanged stream sends a comment (proxies close idle
// streams).
const (
	eventTick      = time.Second
	eventKeepalive = 15 * time.Second
	eventWrite     = 30 * time.Second // a stream write that takes longer ends the stream
)

// handleEvents streams the list (server-sent events): an event "consoles"
// with the List whenever it changes, and "logout" when the session ends.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	ss, u := s.session(r)
	if u == nil {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	if !s.track() {
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	defer s.wg.Done()
	ss.streamOpened()
	defer func() { ss.streamClosed(s.cfg.Now()) }()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(eventWrite))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	var last []byte
	var quiet time.Duration
	t := time.NewTicker(eventTick)
	defer t.Stop()
	for {
		if u = s.current(ss); u == nil {
			send([]byte("event: logout\ndata: {}\n\n"))
			return
		}
		b, _ := json.Marshal(s.list(u))
		if !bytes.Equal(b, last) {
			if !send(fmt.Appendf(nil, "event: consoles\ndata: %s\n\n", b)) {
				return
			}
			last, quiet = b, 0
		} else if quiet += eventTick; quiet >= eventKeepalive {
			if !send([]byte(": keep-alive\n\n")) {
				return
			}
			quiet = 0
		}
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-ss.ctx.Done():
			send([]byte("event: logout\ndata: {}\n\n"))
			return
		}
	}
}

// safeName keeps a download's file name to harmless characters.
var safeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// handleLog sends a console's log file: the current one, or ?n=N for the
// Nth rotated one. Read-only access to the VM is enough.
func (s *Server) handleLog(w http.ResponseWriter, r *http.Request) {
	_, u := s.session(r)
	if u == nil {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	e, _, ok := s.find(r.PathValue("id"), u)
	if !ok || e.Kind != kindConsole {
		writeError(w, http.StatusNotFound, "no such console")
		return
	}
	if e.logFile == "" {
		writeError(w, http.StatusNotFound, "this console has no log ([remote] log_dir is not set)")
		return
	}
	path := e.logFile
	if n := r.URL.Query().Get("n"); n != "" && n != "0" {
		k, err := strconv.Atoi(n)
		if err != nil || k < 1 || k > configs.MaxLogFiles {
			writeError(w, http.StatusBadRequest, "n: want a rotated log's number, 1.."+strconv.Itoa(configs.MaxLogFiles))
			return
		}
		path += "." + strconv.Itoa(k)
	}
	f, err := os.Open(path)
	if err != nil {
		writeError(w, http.StatusNotFound, "no such log file")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		writeError(w, http.StatusNotFound, "no such log file")
		return
	}
	name := safeName.ReplaceAllString(filepath.Base(path), "_")
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	s.log.Info("web console log downloaded", "user", u.Name, "vm", e.VM, "file", path)
	http.ServeContent(w, r, "", st.ModTime(), f)
}
