package web

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Taps lets users watch a port joined to a device or remote: a copy of
// its traffic, read-only, that never holds the link up, after its recent
// traffic (a *bridge.Bridge; bridge.SetTapHistory sizes what it keeps,
// [web] watch_scrollback).
type Taps interface {
	Tap(key vspc.PortKey, fn bridge.TapFunc) (replay []bridge.TapChunk, untap func(), err error)
}

// Directions a watcher sees.
const (
	dirVM     = "vm"     // what the VM sends (its console output)
	dirDevice = "device" // what the device or remote sends to the VM
	dirBoth   = "both"
)

// watchBuffer bounds the traffic waiting for one watcher; past it the
// watcher misses output (and is told how much), the link never waits.
const watchBuffer = 256 << 10

// watcher is one browser watching a link, for the list and who panels.
type watcher struct {
	user, dir, peer string
	since           time.Time
}

func (s *Server) addWatcher(key string, w *watcher) {
	s.mu.Lock()
	if s.watching[key] == nil {
		s.watching[key] = map[*watcher]struct{}{}
	}
	s.watching[key][w] = struct{}{}
	s.mu.Unlock()
	s.snap.invalidate()
}

func (s *Server) removeWatcher(key string, w *watcher) {
	s.mu.Lock()
	delete(s.watching[key], w)
	if len(s.watching[key]) == 0 {
		delete(s.watching, key)
	}
	s.mu.Unlock()
	s.snap.invalidate()
}

// watchers lists who watches the port with key, oldest first.
func (s *Server) watchers(key string) []User {
	s.mu.Lock()
	out := make([]User, 0, len(s.watching[key]))
	for w := range s.watching[key] {
		out = append(out, User{User: w.user, Mode: "watch (" + w.dir + ")", Via: "web", Peer: w.peer, Since: w.since})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b User) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.Peer, b.Peer)
	})
	return out
}

// tapBuffer takes a link's traffic from the tap (on the forwarding path:
// it never blocks) and hands it to the watcher's output loop.
type tapBuffer struct {
	dir   string
	limit int
	wake  chan struct{} // one token: there is something to take

	mu   sync.Mutex // guards buf and lost
	buf  []byte
	lost int64
}

func newTapBuffer(dir string, limit int) *tapBuffer {
	return &tapBuffer{dir: dir, limit: limit, wake: make(chan struct{}, 1)}
}

// wants reports whether the watcher sees traffic of that direction.
func (b *tapBuffer) wants(fromDevice bool) bool {
	return b.dir == dirBoth || (b.dir == dirDevice) == fromDevice
}

// add is the bridge.TapFunc.
func (b *tapBuffer) add(fromDevice bool, p []byte) {
	if !b.wants(fromDevice) {
		return
	}
	b.mu.Lock()
	if len(b.buf)+len(p) > b.limit {
		b.lost += int64(len(p))
	} else {
		b.buf = append(b.buf, p...)
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// take returns what is waiting (into spare's array) and how much was
// lost since the last take.
func (b *tapBuffer) take(spare []byte) ([]byte, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out, lost := b.buf, b.lost
	b.buf, b.lost = spare[:0], 0
	return out, lost
}

// handleWatch streams a copy of a joined port's traffic: a console that
// only reads. The protocol is the console's (doc.go) with kind "link",
// mode "watch", the link's recent traffic in the watched direction as the
// scrollback, and no input.
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, kindLink, "no such port", s.watch)
}

// watch taps the link of e for the stream and runs it.
func (s *Server) watch(st *stream, r *http.Request, e snapEntry, v Entry) {
	u := st.user
	if s.cfg.Taps == nil {
		st.finish(closeGone, "watching is not wired in")
		return
	}
	dir := r.URL.Query().Get("dir")
	switch dir {
	case "":
		dir = dirVM
	case dirVM, dirDevice, dirBoth:
	default:
		st.finish(closeForbidden, "unknown dir "+dir+": want vm, device or both")
		return
	}
	if !st.reserve() {
		return
	}
	defer s.release(u.Name)
	tb := newTapBuffer(dir, watchBuffer)
	history, untap, err := s.cfg.Taps.Tap(e.pkey, tb.add)
	if err != nil {
		st.finish(closeGone, "the port is no longer joined: "+userText(err))
		return
	}
	wr := &watcher{user: u.Name, dir: dir, peer: r.RemoteAddr, since: s.cfg.Now()}
	s.addWatcher(e.key, wr)
	st.onFinish = func(string) {
		untap()
		s.removeWatcher(e.key, wr)
	}
	st.hook()
	st.ss.streamOpened()
	defer func() { st.ss.streamClosed(s.cfg.Now()) }()
	started := time.Now()
	log := s.log.With("user", u.Name, "vm", e.VM, "vc_uuid", e.VCUUID, "service_uri", e.Service, "device", e.Device, "peer", r.RemoteAddr)
	log.Info("web watch started", "dir", dir)
	var replay []byte
	for _, c := range history {
		if tb.wants(c.FromDevice) {
			replay = append(replay, c.Data...)
		}
	}
	hello := helloMsg{Type: "hello", ID: e.ID, Kind: kindLink, VM: e.VM, VCUUID: e.VCUUID, Service: e.Service, State: e.State, User: u.Name,
		Right: v.Right, Mode: "watch", Device: e.Device, DeviceState: e.DeviceState, Dir: dir, Replay: len(replay)}
	ws := &watchStream{stream: st, tb: tb, entry: e}
	if st.send(hello) && ws.sendBytes(replay) && st.send(textMsg{Type: "replay-end"}) {
		st.run(ws.input, ws.output, ws.status)
	}
	log.Info("web watch ended", "why", st.why(), "after", time.Since(started).Round(time.Millisecond).String(), "bytes_out", ws.bytesOut.Load(), "lost", ws.lost.Load())
}

// watchStream is one watch: output sends the tapped traffic, status the
// status and pings, input (the handler's goroutine) refuses input.
type watchStream struct {
	*stream
	tb       *tapBuffer
	entry    snapEntry
	bytesOut atomic.Int64
	lost     atomic.Int64
}

func (ws *watchStream) output() {
	var spare []byte
	for {
		select {
		case <-ws.tb.wake:
		case <-ws.ctx.Done():
			return
		}
		data, lost := ws.tb.take(spare)
		if lost > 0 {
			ws.lost.Add(lost)
			if !ws.send(textMsg{Type: "notice", Text: fmt.Sprintf("this browser fell behind: %d bytes of traffic were not shown", lost)}) {
				return
			}
		}
		if !ws.sendBytes(data) {
			return
		}
		spare = data
		if cap(spare) > watchBuffer {
			spare = nil
		}
	}
}

// sendBytes sends traffic as binary frames; false: the stream finished.
func (ws *watchStream) sendBytes(p []byte) bool {
	for len(p) > 0 {
		k := min(len(p), outChunk)
		if ws.writeBinary(p[:k]) != nil {
			ws.finish(websocket.StatusAbnormalClosure, "")
			return false
		}
		ws.bytesOut.Add(int64(k))
		p = p[k:]
	}
	return true
}

// status sends watchers, the port's and the device's state when they
// change, follows the session and the user's rights, and pings.
func (ws *watchStream) status() {
	var lastUsers []byte
	lastState, lastDevice := ws.entry.State, ws.entry.DeviceState
	ping := time.Now().Add(ws.s.settings().web.Ping.Duration)
	t := time.NewTicker(statusTick)
	defer t.Stop()
	for {
		u, _, ok := ws.allowed(ws.entry, "VM")
		if !ok {
			return
		}
		e, _, ok := ws.s.find(ws.entry.ID, u)
		if !ok {
			ws.finish(closeGone, "the port closed")
			return
		}
		if !ws.sendUsers(e.Users, &lastUsers) {
			return
		}
		if e.State != lastState || e.DeviceState != lastDevice {
			if !ws.send(stateMsg{Type: "state", State: e.State, DeviceState: e.DeviceState}) {
				return
			}
			lastState, lastDevice = e.State, e.DeviceState
		}
		if now := time.Now(); !now.Before(ping) {
			ping = now.Add(ws.s.settings().web.Ping.Duration)
			if !ws.ping() {
				return
			}
		}
		select {
		case <-t.C:
		case <-ws.ctx.Done():
			return
		}
	}
}

// input reads the browser's messages: a watcher sends nothing to the VM.
func (ws *watchStream) input() {
	warned := false
	for {
		typ, _, ok := ws.read()
		if !ok {
			return
		}
		var reply error
		switch {
		case typ == websocket.MessageBinary && !warned:
			warned = true
			reply = ws.writeJSON(textMsg{Type: "notice", Text: "watching: input is not sent"})
		case typ == websocket.MessageText:
			reply = ws.writeJSON(textMsg{Type: "error", Text: "watching: nothing is sent to the VM"})
		}
		if reply != nil {
			return
		}
	}
}
