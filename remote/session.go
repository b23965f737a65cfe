package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/lazylog"
)

// inputEvent is one unit of user input: data, or a BREAK.
type inputEvent struct {
	data []byte // owned by the receiver
	brk  bool
	cmd  byte // an escape command read at another member's front door (forwarded sessions)
}

// inputSource is where a session reads user input: a telnet or raw TCP
// connection, or an SSH channel. readInput blocks; it fails once the
// connection is gone.
type inputSource interface {
	readInput() (inputEvent, error)
}

// userText is an error as users see it: without the package prefix.
func userText(err error) string { return strings.TrimPrefix(err.Error(), "remote: ") }

// refusal is an attach that was refused (busy, mode not allowed); the
// user was told, and the front door carries on.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

// errAbort: the user typed Ctrl-C or Ctrl-D at a prompt.
var errAbort = errors.New("remote: aborted at a prompt")

// session is one remote connection after transport setup: login, the
// front door menu, and attachments to consoles. It runs on the
// connection's goroutine, which is its only reader; output goes through
// out, whose writer goroutine the connection handler owns.
type session struct {
	h           *Hub
	log         *slog.Logger
	peer, ip    string
	via         string // telnet, telnets, tcp, ssh
	in          inputSource
	out         *outQueue
	enc         func(dst, p []byte) []byte
	interactive bool        // escapes, banners, notices
	echo        func() bool // we echo at prompts (telnet: while our ECHO is on; SSH: with a pty)
	trusted     func()
	errOut      func(string) // where refusals go when not interactive (SSH stderr); nil: print

	// Parking (per-VM telnet ports): idle starts the idle period once
	// attached; park parks the idle connection and reports whether it did;
	// att is the attachment to go on with after a wake-up.
	idle func()
	park func() bool
	att  *attached

	user       *configs.User // nil on an open listener
	userName   string
	clusterErr error  // the other members' consoles could not be listed (the menu says so)
	pend       []byte // input read but not consumed yet
	skipLF     bool   // a CR ended the last line: drop a following LF or NUL
}

func appendRaw(dst, p []byte) []byte { return append(dst, p...) }

func (s *session) print(str string) { s.out.control([]byte(str)) }

// notice tells an interactive user something; a non-interactive session
// (a clean 8-bit pipe) gets only console output.
func (s *session) notice(str string) {
	if s.interactive {
		s.print(str)
	}
}

// refuse tells the user why something was refused: on SSH without a pty
// on stderr, else inline.
func (s *session) refuse(str string) {
	if s.errOut != nil {
		s.errOut(str)
		return
	}
	s.print(str)
}

// readLine reads one line at a prompt, with minimal editing (BS/DEL,
// Ctrl-U). Ctrl-C and Ctrl-D abort. echo false hides the input.
func (s *session) readLine(prompt string, echo bool) (string, error) {
	s.print(prompt)
	echo = echo && s.echo()
	eol := s.echo()
	var line []byte
	for {
		if len(s.pend) == 0 {
			ev, err := s.in.readInput()
			if err != nil {
				return "", err
			}
			s.pend = ev.data
		}
		for i := 0; i < len(s.pend); i++ {
			b := s.pend[i]
			if s.skipLF {
				s.skipLF = false
				if b == '\n' || b == 0 {
					continue
				}
			}
			switch {
			case b == '\r' || b == '\n':
				s.skipLF = b == '\r'
				s.pend = s.pend[i+1:]
				if eol {
					s.print("\r\n")
				}
				return string(line), nil
			case b == 0x7f || b == 0x08:
				if len(line) > 0 {
					line = line[:len(line)-1]
					if echo {
						s.print("\b \b")
					}
				}
			case b == 0x15: // Ctrl-U
				if echo {
					s.print(strings.Repeat("\b \b", len(line)))
				}
				line = line[:0]
			case b == 0x03 || b == 0x04:
				s.pend = nil
				return "", errAbort
			case b >= 0x20 && len(line) < 256:
				line = append(line, b)
				if echo {
					s.print(string(b))
				}
			}
		}
		s.pend = nil
	}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxLoginAttempts per connection.
const maxLoginAttempts = 3

// login asks for a user name and password until one is right, up to
// maxLoginAttempts times.
func (s *session) login(ctx context.Context) error {
	for range maxLoginAttempts {
		name, err := s.readLine("login: ", true)
		if err != nil {
			return err
		}
		if name == "" {
			continue
		}
		pw, err := s.readLine("password: ", false)
		if err != nil {
			return err
		}
		u, err := s.h.auth.password(s.ip, name, s.via, []byte(pw))
		if err == nil {
			s.user, s.userName = u, name
			s.log = lazylog.With(s.log, "user", name)
			s.h.logins.Add(1)
			s.log.Info("remote login")
			return nil
		}
		if errors.Is(err, ErrLoginBlocked) {
			s.print("Too many failed logins; try again later.\r\n")
			return err
		}
		if err := sleep(ctx, s.h.cfg.Remote.LoginDelay.Duration); err != nil {
			return err
		}
		s.print("Login incorrect\r\n")
	}
	return ErrLoginFailed
}

// right is the user's access to c: "rw", "ro", or false.
func (s *session) right(c *console) (string, bool) {
	if s.user == nil {
		return configs.AccessRW, true // open listener
	}
	return s.user.Right(c.req.VMName, c.req.VCUUID)
}

// modeFor picks the attach mode: the one asked for (if the right allows
// it), else read-write for "rw" rights and read-only for "ro".
func modeFor(right string, asked string) (Mode, error) {
	def := ModeShared
	if right != configs.AccessRW {
		def = ModeReadOnly
	}
	if asked == "" {
		return def, nil
	}
	m, ok := ParseMode(asked)
	if !ok {
		return 0, fmt.Errorf("remote: unknown mode %q: want rw, ro, x (exclusive) or xw (exclusive-write)", asked)
	}
	if m.writes() && right != configs.AccessRW {
		return 0, errors.New("remote: you have read-only access to this console")
	}
	return m, nil
}

// attached is a session's state while it is attached to a console: what
// its read loop needs to go on, also after the connection was parked.
type attached struct {
	c        *console
	a        *attachment
	esc      escaper
	warnedRO bool
}

// errParked: the session's connection was parked while attached; the
// session goes on in its wake function (resume), not on this goroutine.
var errParked = errors.New("remote: connection parked")

// errIdle: the connection was idle for a whole park period (telnetIn).
var errIdle = errors.New("remote: connection idle")

// attach joins the session to c until the user detaches (nil), the
// console or connection goes away, or the client is dropped (error). A
// refused attach is told to the user and returns nil. With a parkable
// connection it may also return errParked: attachLoop then goes on later.
func (s *session) attach(ctx context.Context, c *console, mode Mode) error {
	right, _ := s.right(c)
	a := &attachment{user: s.userName, right: right, mode: mode, peer: s.peer, via: s.via, since: s.h.now(), interactive: s.interactive,
		pause: s.h.cfg.Remote.ClientOverflow != configs.OverflowDrop, out: s.out, enc: s.enc}
	if err := c.attach(a); err != nil {
		s.refuse("[vspc-bridge: " + userText(err) + "]\r\n")
		return refusal{err}
	}
	st := &attached{c: c, a: a}
	if s.interactive {
		st.esc.seq = s.h.escape
	}
	if s.idle != nil {
		s.idle()
	}
	return s.attachLoop(ctx, st)
}

// attachLoop reads the attached user's input until the user detaches,
// the connection or console goes, or the connection is parked
// (errParked, with st kept in s.att).
func (s *session) attachLoop(ctx context.Context, st *attached) error {
	c, a := st.c, st.a
	why := "detached"
	defer func() {
		if why != "" {
			c.detach(a, why)
		}
	}()
	for {
		data := s.pend
		s.pend = nil
		if len(data) == 0 {
			ev, err := s.in.readInput()
			if errors.Is(err, errIdle) {
				s.att = st // before parking: the wake-up may come at once
				if s.park() {
					why = ""
					return errParked
				}
				s.att = nil
				s.idle()
				continue
			}
			if errors.Is(err, errDetached) {
				return nil // the other member's user detached
			}
			if err != nil {
				why = "disconnected"
				if s.out.isDropped() {
					why = "dropped: too slow"
				}
				return err
			}
			if ev.brk {
				if err := c.sendBreak(a); errors.Is(err, ErrReadOnly) {
					s.notice("\r\n[vspc-bridge: read-only: BREAK not sent]\r\n")
				} else if err != nil {
					why = "console closed"
					return err
				}
			}
			if ev.cmd != 0 {
				// An escape command read at another member's front door
				// (forwarded sessions: that member runs the escaper).
				if detach, err := s.command(st, ev.cmd); err != nil {
					why = "console closed"
					return err
				} else if detach {
					return nil
				}
			}
			data = ev.data
		}
		if s.skipLF && len(data) > 0 && (data[0] == '\n' || data[0] == 0) {
			data = data[1:]
		}
		s.skipLF = false
		var stop error
		detach := false
		st.esc.feed(data, func(d []byte) {
			if stop != nil || detach {
				return
			}
			if err := c.input(a, d); errors.Is(err, ErrReadOnly) {
				if !st.warnedRO {
					st.warnedRO = true
					s.notice("\r\n[vspc-bridge: you are read-only; input is not sent]\r\n")
				}
			} else if err != nil {
				stop = err
			}
		}, func(cmd byte) bool {
			detach, stop = s.command(st, cmd)
			return !detach && stop == nil
		})
		if stop != nil {
			why = "console closed"
			return stop
		}
		if detach {
			s.notice(fmt.Sprintf("\r\n[vspc-bridge: detached from %s]\r\n", c.req.VMName))
			return nil
		}
	}
}

// command runs an escape command of the user attached as st: detach
// reports a detach (the caller says so), stop an error that ends the
// attachment.
func (s *session) command(st *attached, cmd byte) (detach bool, stop error) {
	c, a := st.c, st.a
	switch cmd {
	case cmdDetach:
		return true, nil
	case cmdBreak:
		if err := c.sendBreak(a); errors.Is(err, ErrReadOnly) {
			s.notice("\r\n[vspc-bridge: read-only: BREAK not sent]\r\n")
		} else if err != nil {
			return false, err
		} else {
			s.print("\r\n[vspc-bridge: BREAK sent]\r\n")
		}
	case cmdWho:
		s.print("\r\n[vspc-bridge: attached: " + c.who() + "]\r\n")
	case cmdSpy, cmdAttach:
		m := ModeReadOnly
		if cmd == cmdAttach {
			m = ModeShared
		}
		if err := c.setMode(a, m); err != nil {
			s.print("\r\n[vspc-bridge: " + userText(err) + "]\r\n")
		} else {
			st.warnedRO = false
			s.print(fmt.Sprintf("\r\n[vspc-bridge: you are %s]\r\n", m))
		}
	default:
		s.print(s.escapeHelp())
	}
	return false, nil
}

func (s *session) escapeHelp() string {
	if len(s.h.escape) == 0 {
		return "\r\n[vspc-bridge: escapes are off ([remote] escape = \"\"); close the connection to detach]\r\n"
	}
	e := escapeName(s.h.escape)
	last := escapeName(s.h.escape[len(s.h.escape)-1:])
	return fmt.Sprintf("\r\n[vspc-bridge: escape commands: %s. detach, %sb send BREAK, %sw who is attached, %ss read-only, %sa read-write, %s%s send %s itself, %s? this help]\r\n", e, e, e, e, e, e, last, e, e)
}

// entry is a console a user may pick: one this bridge serves (c), or
// one another member of the cluster serves (rc).
type entry struct {
	c  *console
	rc *ClusterConsole
}

func (e entry) vmName() string {
	if e.c != nil {
		return e.c.req.VMName
	}
	return e.rc.VMName
}

func (e entry) vcUUID() string {
	if e.c != nil {
		return e.c.req.VCUUID
	}
	return e.rc.VCUUID
}

func (e entry) serviceURI() string {
	if e.c != nil {
		return e.c.req.ServiceURI
	}
	return e.rc.ServiceURI
}

// rightTo is the user's access to a console by its VM name and VC UUID.
func (s *session) rightTo(vmName, vcUUID string) (string, bool) {
	if s.user == nil {
		return configs.AccessRW, true // open listener
	}
	return s.user.Right(vmName, vcUUID)
}

// reachable lists the consoles the session's user may reach, by VM name:
// this bridge's, and in a cluster those the other members serve.
func (s *session) reachable(ctx context.Context) []entry {
	var out []entry
	local := map[string]bool{}
	for _, c := range s.h.consoleList() {
		local[c.key] = true
		if _, ok := s.right(c); ok {
			out = append(out, entry{c: c})
		}
	}
	s.clusterErr = nil
	if s.h.cluster == nil {
		return out
	}
	rcs, err := s.h.clusterConsoles(ctx)
	if err != nil {
		s.clusterErr = err
		s.log.Warn("remote: cannot list the consoles of the other members", "err", err)
	}
	n := len(out)
	for i := range rcs {
		rc := &rcs[i]
		if local[rc.Key] {
			continue // served here (etcd may still name its last owner)
		}
		if _, ok := s.rightTo(rc.VMName, rc.VCUUID); ok {
			out = append(out, entry{rc: rc})
		}
	}
	if len(out) > n {
		slices.SortStableFunc(out, func(a, b entry) int {
			if r := strings.Compare(a.vmName(), b.vmName()); r != 0 {
				return r
			}
			return strings.Compare(a.serviceURI(), b.serviceURI())
		})
	}
	return out
}

// find picks a reachable console by number (1-based, of list), VM name,
// VC UUID, or "name/service".
func find(list []entry, what string) (entry, error) {
	if n, err := strconv.Atoi(what); err == nil && n >= 1 && n <= len(list) {
		return list[n-1], nil
	}
	var hits []entry
	for _, e := range list {
		if e.vmName() == what || strings.EqualFold(e.vcUUID(), what) || e.vmName()+"/"+e.serviceURI() == what {
			hits = append(hits, e)
		}
	}
	switch len(hits) {
	case 0:
		return entry{}, fmt.Errorf("remote: no console %q that you may reach", what)
	case 1:
		return hits[0], nil
	}
	return entry{}, fmt.Errorf("remote: %q names %d serial ports; pick one by number or as name/service", what, len(hits))
}

func (s *session) printMenu(list []entry) {
	var b strings.Builder
	if s.clusterErr != nil {
		b.WriteString("(The consoles of the other cluster members are not listed: etcd did not answer.)\r\n")
	}
	if len(list) == 0 {
		b.WriteString("No consoles you may reach right now. Press Enter to look again, q to quit.\r\n")
		s.print(b.String())
		return
	}
	fmt.Fprintf(&b, "%3s  %-24s %-36s %-9s %-22s %s\r\n", "#", "VM", "VC UUID", "STATE", "PORT", "ATTACHED")
	for i, e := range list {
		name := e.vmName()
		if name == "" {
			name = "(unnamed)"
		}
		if svc := e.serviceURI(); svc != "" {
			name += "/" + svc
		}
		right, _ := s.rightTo(e.vmName(), e.vcUUID())
		if e.rc != nil {
			// Served by another member: reached over the member link.
			fmt.Fprintf(&b, "%3d  %-24s %-36s %-9s %-22s ? [%s]\r\n", i+1, name, e.rc.VCUUID, "@"+e.rc.Member, e.rc.listenString(), right)
			continue
		}
		ci := e.c.info()
		listen := ci.Listen
		if listen == "" {
			listen = "-"
		}
		users := make([]string, 0, len(ci.Clients))
		for _, cl := range ci.Clients {
			users = append(users, cl.User)
		}
		fmt.Fprintf(&b, "%3d  %-24s %-36s %-9s %-22s %d %s [%s]\r\n", i+1, name, e.c.req.VCUUID, ci.State, listen, len(users), strings.Join(users, ","), right)
	}
	s.print(b.String())
}

// frontDoor runs the menu: list, pick, attach, back to the list.
func (s *session) frontDoor(ctx context.Context) error {
	s.print(fmt.Sprintf("Welcome %s. Pick a console by number or VM name, optionally followed by a mode\r\n(rw, ro, x = exclusive, xw = exclusive-write); q quits. Escape: %s\r\n", s.userName, escapeName(s.h.escape)))
	for ctx.Err() == nil {
		list := s.reachable(ctx)
		s.printMenu(list)
		line, err := s.readLine("console> ", true)
		if err != nil {
			if errors.Is(err, errAbort) {
				s.print("bye\r\n")
				return nil
			}
			return err
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch strings.ToLower(f[0]) {
		case "q", "quit", "exit", "logout":
			s.print("bye\r\n")
			return nil
		case "?", "help":
			s.print(s.escapeHelp())
			continue
		}
		e, err := find(list, f[0])
		if err != nil {
			s.print(userText(err) + "\r\n")
			continue
		}
		var r refusal
		if err := s.attachEntry(ctx, e, f[1:]); err != nil && !errors.As(err, &r) {
			return err
		}
	}
	return ctx.Err()
}

// attachEntry attaches to a console of this bridge or, over the member
// link, of another member.
func (s *session) attachEntry(ctx context.Context, e entry, args []string) error {
	if e.rc != nil {
		return s.attachRemote(ctx, e.rc, args)
	}
	return s.attachChecked(ctx, e.c, args)
}

// attachChecked checks the user's right to c and the mode asked for
// (args: [] or [mode]) and attaches.
func (s *session) attachChecked(ctx context.Context, c *console, args []string) error {
	right, ok := s.right(c)
	if !ok {
		s.log.Warn("remote access denied", "vm", c.req.VMName, "vc_uuid", c.req.VCUUID)
		s.refuse(fmt.Sprintf("[vspc-bridge: %s has no access to the console of %s]\r\n", s.userName, c.req.VMName))
		return ErrNoAccess
	}
	asked := ""
	if len(args) > 0 {
		asked = args[0]
	}
	mode, err := modeFor(right, asked)
	if err != nil {
		s.refuse("[vspc-bridge: " + userText(err) + "]\r\n")
		return refusal{err}
	}
	return s.attach(ctx, c, mode)
}

// consoleList returns the open consoles sorted by VM name and service.
func (h *Hub) consoleList() []*console {
	h.mu.Lock()
	list := make([]*console, 0, len(h.consoles))
	for c := range h.consoles {
		list = append(list, c)
	}
	h.mu.Unlock()
	slices.SortFunc(list, func(a, b *console) int {
		if r := strings.Compare(a.req.VMName, b.req.VMName); r != 0 {
			return r
		}
		return strings.Compare(a.req.ServiceURI, b.req.ServiceURI)
	})
	return list
}
