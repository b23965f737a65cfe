package remote

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// ClientConn is the transport of a kind of client the hub does not serve
// itself (a web console's WebSocket, say): where a console's output and
// notices go. The hub writes to it from one goroutine at a time, and only
// while there is output; Write may block while the client is slow, and
// the [remote] client_overflow rule applies to it as to every client.
// Close must unblock a Write in progress; the hub calls it when the
// client is dropped, the console goes away, or Detach is done.
type ClientConn interface {
	io.Writer
	Close() error
}

// AttachOptions say who attaches through Attach, and how.
type AttachOptions struct {
	// User is a [[user]] name, authenticated by the caller; the user's
	// access list decides whether it may attach, and read-only or
	// read-write.
	User string
	// Mode is the lock mode asked for; 0 is read-write with "rw" rights
	// and read-only with "ro".
	Mode Mode
	// Peer (the client's address) and Via (the kind of client, such as
	// "web") show in status, in "who is attached" and in the log.
	Peer, Via string
	// Interactive clients get the attach banner and join/leave notices as
	// text lines in their output.
	Interactive bool
	// Encode turns console output into the client's wire bytes (appending
	// to dst); nil sends it as it is.
	Encode func(dst, p []byte) []byte
	// Overflow overrides [remote] client_overflow for this client:
	// "pause" or "drop"; "" takes the configured one.
	Overflow string
}

// Client is a client attached by Hub.Attach. Its methods are for the
// goroutine that reads the client's input; Detach may be called from
// any goroutine.
type Client struct {
	con  *console
	a    *attachment
	out  *outQueue
	done chan struct{} // closed when the hub has ended the client
	once sync.Once
}

// ErrNoConsole is returned by Attach for a key no console has.
var ErrNoConsole = errors.New("remote: no such console")

// Attach attaches a client to the console whose ConsoleInfo.Key is key,
// on behalf of opt.User, in opt.Mode. The client first gets the
// scrollback, then the console's output, through conn. Attach returns
// ErrNoConsole, ErrNoAccess (the user may not reach it, or not in that
// mode), ErrConsoleBusy (lock modes, max_clients) or ErrConsoleClosed.
// The caller must call Detach when the client goes.
func (h *Hub) Attach(key string, conn ClientConn, opt AttachOptions) (*Client, error) {
	if !h.cfg.Remote.Enabled {
		return nil, ErrDisabled
	}
	c := h.consoleByKey(key)
	if c == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoConsole, key)
	}
	u := h.auth.user(opt.User)
	if u == nil {
		return nil, fmt.Errorf("%w: unknown user %q", ErrNoAccess, opt.User)
	}
	right, ok := u.Right(c.req.VMName, c.req.VCUUID)
	if !ok {
		return nil, fmt.Errorf("%w: %s may not reach the console of %s", ErrNoAccess, opt.User, c.req.VMName)
	}
	mode := opt.Mode
	switch {
	case mode == 0 && right == configs.AccessRW:
		mode = ModeShared
	case mode == 0:
		mode = ModeReadOnly
	case mode.writes() && right != configs.AccessRW:
		return nil, fmt.Errorf("%w: %s has read-only access to the console of %s", ErrNoAccess, opt.User, c.req.VMName)
	case mode < ModeShared || mode > ModeExclusiveWrite:
		return nil, fmt.Errorf("remote: attach: unknown mode %v", mode)
	}
	overflow := opt.Overflow
	switch overflow {
	case "":
		overflow = h.cfg.Remote.ClientOverflow
	case configs.OverflowPause, configs.OverflowDrop:
	default:
		return nil, fmt.Errorf("remote: attach: overflow %q: want %q or %q", overflow, configs.OverflowPause, configs.OverflowDrop)
	}
	cl := &Client{con: c, done: make(chan struct{})}
	cl.out = h.newOutQueue(conn, func() { conn.Close() }, func(error) {
		conn.Close()
		close(cl.done)
	})
	cl.a = &attachment{user: opt.User, right: right, mode: mode, peer: opt.Peer, via: opt.Via, since: h.now(),
		interactive: opt.Interactive, pause: overflow != configs.OverflowDrop, out: cl.out, enc: opt.Encode}
	if err := c.attach(cl.a); err != nil {
		cl.out.close("")
		cl.out.wait()
		return nil, err
	}
	return cl, nil
}

// consoleByKey returns the open console with key, or nil.
func (h *Hub) consoleByKey(key string) *console {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.consoles {
		if c.key == key {
			return c
		}
	}
	return nil
}

// Input sends data the client typed to the VM. It blocks while the VM's
// queue is full; it returns ErrReadOnly for a read-only client.
func (cl *Client) Input(p []byte) error { return cl.con.input(cl.a, p) }

// Break sends a BREAK to the VM (ErrReadOnly for a read-only client).
func (cl *Client) Break() error { return cl.con.sendBreak(cl.a) }

// SetMode switches between ModeReadOnly and ModeShared, within the
// user's rights and the locks others hold.
func (cl *Client) SetMode(m Mode) error { return cl.con.setMode(cl.a, m) }

// Mode is the client's mode now (a read-write request is read-only while
// another client holds exclusive-write).
func (cl *Client) Mode() Mode {
	cl.con.mu.Lock()
	defer cl.con.mu.Unlock()
	return cl.a.mode
}

// Done is closed when the hub has ended the client: dropped for being
// too slow (Dropped), the console gone, or the hub closed. The ClientConn
// is closed by then.
func (cl *Client) Done() <-chan struct{} { return cl.done }

// Dropped reports whether the client was dropped for falling behind.
func (cl *Client) Dropped() bool { return cl.out.isDropped() }

// Detach detaches the client, delivers what is queued for it (the
// ClientConn is closed if it takes more than 2 s), closes the ClientConn
// and returns once the hub's writer for it has ended. It is idempotent.
func (cl *Client) Detach() {
	cl.once.Do(func() {
		why := "detached"
		if cl.out.isDropped() {
			why = "dropped: too slow"
		}
		cl.con.detach(cl.a, why)
		cl.out.close("")
	})
	cl.out.wait()
}
