package web

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// subprotocol is the console protocol's WebSocket sub-protocol (doc.go).
const subprotocol = "vspc.console.v1"

// Limits of a console stream.
const (
	readLimit    = 64 << 10         // one message from the browser (the page sends input in 8 KiB pieces)
	outChunk     = 32 << 10         // console output per binary frame at most
	writeTimeout = 60 * time.Second // a frame the browser takes longer to accept ends the stream
	statusTick   = time.Second      // users, state, mode and rights are looked at this often
)

// Close codes (doc.go).
const (
	closeTooSlow   = websocket.StatusTryAgainLater
	closeSession   = websocket.StatusCode(4401)
	closeForbidden = websocket.StatusCode(4403)
	closeGone      = websocket.StatusCode(4404)
	closeBusy      = websocket.StatusCode(4409)
	closeTooMany   = websocket.StatusCode(4429)
)

// Control messages, server to browser.
type (
	helloMsg struct {
		Type     string `json:"type"` // hello
		ID       string `json:"id"`
		Kind     string `json:"kind"` // console or link
		VM       string `json:"vm"`
		VCUUID   string `json:"vc_uuid"`
		Service  string `json:"service"`
		State    string `json:"state"` // the VM port's: attached, detached, vmotion
		User     string `json:"user"`
		Right    string `json:"right"` // rw or ro
		Mode     string `json:"mode"`  // read-write, read-only, exclusive, exclusive-write; watch
		CanWrite bool   `json:"can_write"`
		Replay   int    `json:"replay"` // scrollback bytes that follow, then replay-end
		Log      bool   `json:"log"`
		Note     string `json:"note,omitempty"`
		// A watch: the device, its state, and the direction watched.
		Device      string `json:"device,omitempty"`
		DeviceState string `json:"device_state,omitempty"`
		Dir         string `json:"dir,omitempty"`
	}
	modeMsg struct {
		Type     string `json:"type"` // mode
		Mode     string `json:"mode"`
		CanWrite bool   `json:"can_write"`
		Note     string `json:"note,omitempty"`
	}
	usersMsg struct {
		Type  string `json:"type"` // users
		Users []User `json:"users"`
	}
	stateMsg struct {
		Type   string `json:"type"` // state
		State  string `json:"state"`
		Paused bool   `json:"paused"` // the console waits for a slow client
		// DeviceState is a watched link's device: connecting, up, down.
		DeviceState string `json:"device_state,omitempty"`
	}
	textMsg struct {
		Type string `json:"type"` // notice or error
		Text string `json:"text"`
	}
)

// clientMsg is a control message from the browser.
type clientMsg struct {
	Type string `json:"type"` // break, mode
	Mode string `json:"mode,omitempty"`
}

// stream is one WebSocket (a console or a watch) and how it ends.
//
// Its loops stop when ctx ends; the WebSocket is closed (with a code the
// page understands) by finish, which is also what unblocks the reader:
// reads and writes use contexts that finish does not cancel, because
// coder/websocket tears a connection down without a close frame when the
// context of a pending read or write ends.
type stream struct {
	s    *Server
	c    *websocket.Conn
	ss   *session
	user *configs.User
	ctx  context.Context // ends when the stream finishes
	stop context.CancelFunc
	// onFinish runs once when the stream finishes, before the WebSocket
	// is closed (a console detaches here, which ends its output). It is
	// set by the handler before hook.
	onFinish func(reason string)
	unhook   []func() bool // hook's context.AfterFunc registrations, undone by end

	once   sync.Once
	code   websocket.StatusCode
	reason string
}

// finish ends the stream with a close code and reason (the first call
// decides; later calls wait for it to be done).
func (st *stream) finish(code websocket.StatusCode, reason string) {
	st.once.Do(func() {
		st.code, st.reason = code, reason
		st.stop()
		if st.onFinish != nil {
			st.onFinish(reason)
		}
		if len(reason) > 120 {
			reason = reason[:120] // a close reason is at most 123 bytes
		}
		st.c.Close(code, reason)
	})
}

// end is the handler's last word: the stream finishes (normally, unless
// something else decided first) and its hooks are undone.
func (st *stream) end() {
	st.finish(websocket.StatusNormalClosure, "")
	for _, f := range st.unhook {
		f()
	}
}

func (st *stream) writeJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(st.s.ctx, writeTimeout)
	defer cancel()
	return st.c.Write(ctx, websocket.MessageText, b)
}

func (st *stream) writeBinary(p []byte) error {
	ctx, cancel := context.WithTimeout(st.s.ctx, writeTimeout)
	defer cancel()
	return st.c.Write(ctx, websocket.MessageBinary, p)
}

// read reads the browser's next message; it returns once the stream is
// finished (finish closes the WebSocket). When the read fails it finishes
// the stream with the browser's close code (or abnormal closure) and
// reports false.
func (st *stream) read() (websocket.MessageType, []byte, bool) {
	typ, data, err := st.c.Read(context.Background())
	if err != nil {
		code := websocket.CloseStatus(err)
		if code == -1 {
			code = websocket.StatusAbnormalClosure
		}
		st.finish(code, "")
		return 0, nil, false
	}
	return typ, data, true
}

// send writes a control message; when it cannot, the stream finishes
// (abnormal closure) and send reports false.
func (st *stream) send(v any) bool {
	if st.writeJSON(v) != nil {
		st.finish(websocket.StatusAbnormalClosure, "")
		return false
	}
	return true
}

// serve is the frame of a console's or a watch's handler: the request
// counts for the server's Close, the WebSocket is accepted, and open runs
// with the stream and the entry of kind the path's id names (which the
// user may see); otherwise the stream is refused as gone, saying
// notFound. The stream finishes when open returns.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, kind, notFound string, open func(st *stream, r *http.Request, e snapEntry, v Entry)) {
	if !s.track() {
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	defer s.wg.Done()
	st := s.accept(w, r)
	if st == nil {
		return
	}
	defer st.end()
	e, v, ok := s.find(r.PathValue("id"), st.user)
	if !ok || e.Kind != kind {
		st.finish(closeGone, notFound)
		return
	}
	open(st, r, e, v)
}

// reserve counts the stream against its user's [web] max_consoles, or
// refuses it and reports false. The caller releases it (s.release).
func (st *stream) reserve() bool {
	if !st.s.reserve(st.user.Name) {
		st.finish(closeTooMany, "too many consoles open ([web] max_consoles)")
		return false
	}
	return true
}

// run runs a stream whose hello is out: each loop on a goroutine of its
// own and input on the caller's, until the stream finishes; it returns
// once the loops have.
func (st *stream) run(input func(), loops ...func()) {
	var wg sync.WaitGroup
	for _, f := range loops {
		wg.Go(f)
	}
	input()
	st.finish(websocket.StatusNormalClosure, "")
	wg.Wait()
}

// why says why a finished stream ended, for its last log record.
func (st *stream) why() string { return cmp.Or(st.reason, "closed by the browser") }

// allowed is a status loop's check that the session goes on and its user
// may still reach the VM of e (what names the port in the message): it
// returns the user and their right, or finishes the stream and reports
// false.
func (st *stream) allowed(e snapEntry, what string) (*configs.User, string, bool) {
	u := st.s.current(st.ss)
	if u == nil {
		st.finish(closeSession, "session ended: log in again")
		return nil, "", false
	}
	right, ok := u.Right(e.VM, e.VCUUID)
	if !ok {
		st.finish(closeForbidden, "your access to this "+what+" was withdrawn")
		return nil, "", false
	}
	return u, right, true
}

// sendUsers sends the port's users when they differ from what was sent
// last (*last, which it updates); false: the stream finished.
func (st *stream) sendUsers(users []User, last *[]byte) bool {
	b, _ := json.Marshal(usersMsg{Type: "users", Users: users})
	if bytes.Equal(b, *last) {
		return true
	}
	if !st.send(json.RawMessage(b)) {
		return false
	}
	*last = b
	return true
}

// ping pings the browser; false: it did not answer within [web] ping and
// the stream finished.
func (st *stream) ping() bool {
	pctx, cancel := context.WithTimeout(st.s.ctx, st.s.settings().web.Ping.Duration)
	err := st.c.Ping(pctx)
	cancel()
	if err != nil && st.ctx.Err() == nil {
		st.finish(websocket.StatusGoingAway, "no answer to ping")
		return false
	}
	return true
}

// accept accepts a WebSocket (the Origin is checked here) and its session;
// on failure it has answered and returns nil. A stream that is refused
// after the upgrade is closed with a code the page understands. The
// caller defers st.end(), and calls hook once it has set onFinish.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) *stream {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{subprotocol}, OriginPatterns: s.settings().origins})
	if err != nil {
		s.log.Warn("web console refused", "err", err, "origin", r.Header.Get("Origin"), "host", r.Host, "peer", r.RemoteAddr)
		return nil
	}
	c.SetReadLimit(readLimit)
	ss, u := s.session(r)
	if u == nil {
		c.Close(closeSession, "not logged in")
		return nil
	}
	st := &stream{s: s, c: c, ss: ss, user: u}
	st.ctx, st.stop = context.WithCancel(context.Background())
	return st
}

// hook makes a logout (or the session's end) and the server's Close
// finish the stream.
func (st *stream) hook() {
	st.unhook = append(st.unhook,
		context.AfterFunc(st.ss.ctx, func() { st.finish(closeSession, "logged out") }),
		context.AfterFunc(st.s.ctx, func() { st.finish(websocket.StatusGoingAway, "the bridge is stopping") }))
}

// userText is an error as users see it: without the package prefix.
func userText(err error) string {
	s := err.Error()
	for _, p := range []string{"remote: ", "web: "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}
