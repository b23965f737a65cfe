package web

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/remote"
)

// handleConsole attaches a browser to a console: the console protocol of
// doc.go over one WebSocket.
func (s *Server) handleConsole(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, kindConsole, "no such console", s.console)
}

// console attaches the stream to the console of e and runs it.
func (s *Server) console(st *stream, r *http.Request, e snapEntry, v Entry) {
	u := st.user
	asked := r.URL.Query().Get("mode")
	if asked == "" {
		asked = "ro"
		if v.Right == configs.AccessRW {
			asked = "rw"
		}
	}
	mode, ok := remote.ParseMode(asked)
	if !ok {
		st.finish(closeForbidden, "unknown mode "+asked+": want rw, ro, x or xw")
		return
	}
	if mode != remote.ModeReadOnly && v.Right != configs.AccessRW {
		st.finish(closeForbidden, "you have read-only access to this console")
		return
	}
	if !st.reserve() {
		return
	}
	defer s.release(u.Name)
	out := newConsoleOut(s.ctx)
	att, err := s.cfg.Consoles.Attach(e.key, out, remote.AttachOptions{User: u.Name, Mode: mode, Peer: r.RemoteAddr, Via: "web"})
	switch {
	case errors.Is(err, remote.ErrConsoleBusy):
		st.finish(closeBusy, userText(err))
		return
	case errors.Is(err, remote.ErrNoConsole), errors.Is(err, remote.ErrConsoleClosed):
		st.finish(closeGone, "the console is gone")
		return
	case errors.Is(err, remote.ErrNoAccess):
		st.finish(closeForbidden, userText(err))
		return
	case err != nil:
		st.finish(websocket.StatusInternalError, userText(err))
		return
	}
	cs := &consoleStream{stream: st, att: att, out: out, entry: e, replayed: make(chan struct{})}
	out.cs, out.replay = cs, att.Replay()
	st.onFinish = func(string) {
		out.stop()   // no more output frames: the close frame comes next
		att.Detach() // waits for the hub's writer (closing out if it is stuck)
		s.snap.invalidate()
	}
	st.hook()
	s.snap.invalidate()
	st.ss.streamOpened()
	defer func() { st.ss.streamClosed(s.cfg.Now()) }()
	started := time.Now()
	log := s.log.With("user", u.Name, "vm", e.VM, "vc_uuid", e.VCUUID, "service_uri", e.Service, "peer", r.RemoteAddr)
	got := att.Mode()
	cs.lastMode = got
	log.Info("web console attached", "mode", got.String())
	hello := helloMsg{Type: "hello", ID: e.ID, Kind: kindConsole, VM: e.VM, VCUUID: e.VCUUID, Service: e.Service, State: e.State, User: u.Name,
		Right: v.Right, Mode: got.String(), CanWrite: got != remote.ModeReadOnly, Replay: att.Replay(), Log: e.logFile != ""}
	if mode == remote.ModeShared && got == remote.ModeReadOnly {
		hello.Note = "someone holds write access exclusively: you are read-only"
	}
	err = st.writeJSON(hello)
	if err == nil && out.replay == 0 {
		if err = st.writeJSON(textMsg{Type: "replay-end"}); err == nil {
			close(cs.replayed)
		}
	}
	if err != nil {
		st.finish(websocket.StatusAbnormalClosure, "")
	} else {
		close(out.ready) // the hub's writer may send output now
		st.run(cs.input, cs.watch, cs.status)
	}
	log.Info("web console detached", "why", st.why(), "after", time.Since(started).Round(time.Millisecond).String(),
		"bytes_in", cs.bytesIn.Load(), "bytes_out", cs.bytesOut.Load(), "dropped_input", cs.dropped.Load())
}

// consoleStream is one attached console: the hub writes its output
// through a consoleOut, watch notices the hub ending it, status sends the
// status and pings, input (on the handler's goroutine) reads the
// browser's messages.
type consoleStream struct {
	*stream
	att   Attachment
	out   *consoleOut
	entry snapEntry

	replayed  chan struct{} // closed after replay-end: status starts then
	inputBusy atomic.Bool   // a write to the VM is blocked (back-pressure): do not expect pongs
	bytesIn   atomic.Int64
	bytesOut  atomic.Int64
	dropped   atomic.Int64 // input bytes not sent: the mode does not write

	mu       sync.Mutex // guards lastMode
	lastMode remote.Mode
}

// consoleOut is the remote.ClientConn of a console: the hub's writer
// (one goroutine at a time, only while there is output) sends the output
// through it as binary frames; it marks where the scrollback ends with a
// replay-end message. Write waits until the hello is out.
type consoleOut struct {
	cs     *consoleStream // set before ready is closed
	replay int            // scrollback bytes still to send; only Write touches it after ready
	ready  chan struct{}
	ctx    context.Context // ended by Close: a write in progress stops
	cancel context.CancelFunc

	stopOnce sync.Once
	stopped  chan struct{} // no more frames
	failed   atomic.Bool   // a frame could not be written: the browser is gone or stuck
}

func newConsoleOut(parent context.Context) *consoleOut {
	o := &consoleOut{ready: make(chan struct{}), stopped: make(chan struct{})}
	o.ctx, o.cancel = context.WithCancel(parent)
	return o
}

// Write implements remote.ClientConn.
func (o *consoleOut) Write(p []byte) (int, error) {
	select {
	case <-o.ready:
	case <-o.stopped:
		return 0, net.ErrClosed
	}
	n := len(p)
	for len(p) > 0 {
		select {
		case <-o.stopped:
			return n - len(p), net.ErrClosed
		default:
		}
		k := min(len(p), outChunk)
		if o.replay > 0 {
			k = min(k, o.replay)
		}
		if err := o.frame(websocket.MessageBinary, p[:k]); err != nil {
			return n - len(p), err
		}
		o.cs.bytesOut.Add(int64(k))
		p = p[k:]
		if o.replay > 0 {
			if o.replay -= k; o.replay == 0 {
				b, _ := json.Marshal(textMsg{Type: "replay-end"})
				if err := o.frame(websocket.MessageText, b); err != nil {
					return n - len(p), err
				}
				close(o.cs.replayed)
			}
		}
	}
	return n, nil
}

func (o *consoleOut) frame(typ websocket.MessageType, b []byte) error {
	ctx, cancel := context.WithTimeout(o.ctx, writeTimeout)
	defer cancel()
	err := o.cs.c.Write(ctx, typ, b)
	if err != nil {
		o.failed.Store(true)
	}
	return err
}

// stop ends the output without cutting a frame in progress.
func (o *consoleOut) stop() { o.stopOnce.Do(func() { close(o.stopped) }) }

// Close implements remote.ClientConn: the hub is done with the client
// (dropped, the console gone, or detached); a write in progress ends.
func (o *consoleOut) Close() error {
	o.stop()
	o.cancel()
	return nil
}

// watch ends the stream when the hub ends the client.
func (cs *consoleStream) watch() {
	select {
	case <-cs.att.Done():
		switch {
		case cs.att.Dropped():
			cs.finish(closeTooSlow, "fell behind the console; reconnect to catch up")
		case cs.out.failed.Load():
			cs.finish(websocket.StatusGoingAway, "the browser stopped taking output")
		default:
			cs.finish(closeGone, "the console closed: the VM's serial port is gone")
		}
	case <-cs.ctx.Done():
	}
}

// status sends users and state when they change (from after the replay
// on), follows the session and the user's rights, and pings.
func (cs *consoleStream) status() {
	select {
	case <-cs.replayed:
	case <-cs.ctx.Done():
		return
	}
	var lastUsers []byte
	lastState, lastPaused := cs.entry.State, cs.entry.Paused
	ping := time.Now().Add(cs.s.settings().web.Ping.Duration)
	t := time.NewTicker(statusTick)
	defer t.Stop()
	for {
		u, right, ok := cs.allowed(cs.entry, "console")
		if !ok {
			return
		}
		if right != configs.AccessRW && cs.att.Mode() != remote.ModeReadOnly {
			cs.att.SetMode(remote.ModeReadOnly)
		}
		if e, _, ok := cs.s.find(cs.entry.ID, u); ok {
			if !cs.sendUsers(e.Users, &lastUsers) {
				return
			}
			if e.State != lastState || e.Paused != lastPaused {
				if !cs.send(stateMsg{Type: "state", State: e.State, Paused: e.Paused}) {
					return
				}
				lastState, lastPaused = e.State, e.Paused
			}
		}
		if cs.sendMode("") != nil {
			cs.finish(websocket.StatusAbnormalClosure, "")
			return
		}
		if now := time.Now(); !now.Before(ping) {
			ping = now.Add(cs.s.settings().web.Ping.Duration)
			if !cs.inputBusy.Load() && !cs.ping() {
				return
			}
		}
		select {
		case <-t.C:
		case <-cs.ctx.Done():
			return
		}
	}
}

// sendMode tells the browser its mode when it changed (or, with a note,
// always).
func (cs *consoleStream) sendMode(note string) error {
	m := cs.att.Mode()
	cs.mu.Lock()
	changed := m != cs.lastMode
	cs.lastMode = m
	cs.mu.Unlock()
	if !changed && note == "" {
		return nil
	}
	return cs.writeJSON(modeMsg{Type: "mode", Mode: m.String(), CanWrite: m != remote.ModeReadOnly, Note: note})
}

// input reads the browser's messages until the stream ends.
func (cs *consoleStream) input() {
	warned := false
	for {
		typ, data, ok := cs.read()
		if !ok {
			return
		}
		if typ == websocket.MessageBinary {
			cs.inputBusy.Store(true)
			err := cs.att.Input(data)
			cs.inputBusy.Store(false)
			switch {
			case errors.Is(err, remote.ErrReadOnly):
				// Also what keeps a read-only viewer's terminal from
				// answering queries found in the output.
				cs.dropped.Add(int64(len(data)))
				if !warned {
					warned = true
					if cs.writeJSON(textMsg{Type: "notice", Text: "you are read-only: input is not sent"}) != nil {
						return
					}
				}
			case err != nil:
				cs.finish(closeGone, userText(err))
				return
			default:
				cs.bytesIn.Add(int64(len(data)))
			}
			continue
		}
		var m clientMsg
		if err := json.Unmarshal(data, &m); err != nil {
			if cs.writeJSON(textMsg{Type: "error", Text: "bad message: " + err.Error()}) != nil {
				return
			}
			continue
		}
		var reply error
		switch m.Type {
		case "break":
			if err := cs.att.Break(); err != nil {
				reply = cs.writeJSON(textMsg{Type: "error", Text: "BREAK not sent: " + userText(err)})
			} else {
				reply = cs.writeJSON(textMsg{Type: "notice", Text: "BREAK sent"})
			}
		case "mode":
			want, ok := remote.ParseMode(m.Mode)
			switch {
			case !ok || (want != remote.ModeReadOnly && want != remote.ModeShared):
				reply = cs.writeJSON(textMsg{Type: "error", Text: "switch to ro or rw here; reconnect for x or xw"})
			default:
				if err := cs.att.SetMode(want); err != nil {
					reply = cs.writeJSON(textMsg{Type: "error", Text: userText(err)})
				} else {
					warned = false
					reply = cs.sendMode("you are " + want.String())
				}
			}
		default:
			reply = cs.writeJSON(textMsg{Type: "error", Text: "unknown message type " + m.Type})
		}
		if reply != nil {
			return
		}
	}
}
