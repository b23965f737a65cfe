package remote

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// loadHostKey reads an SSH host key, generating and saving it (0600)
// when the file does not exist: RSA 3072 if the file name contains
// "rsa", ECDSA P-256 if "ecdsa", otherwise Ed25519.
func loadHostKey(path string) (ssh.Signer, bool, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		s, err := ssh.ParsePrivateKey(data)
		if err != nil {
			return nil, false, fmt.Errorf("remote: ssh host key %s: %w", path, err)
		}
		return s, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("remote: ssh host key: %w", err)
	}
	var key any
	base := strings.ToLower(filepath.Base(path))
	switch {
	case strings.Contains(base, "ecdsa"):
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case strings.Contains(base, "rsa"):
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, false, fmt.Errorf("remote: generating ssh host key %s: %w", path, err)
	}
	block, err := ssh.MarshalPrivateKey(key, "vspc-bridge host key")
	if err != nil {
		return nil, false, fmt.Errorf("remote: ssh host key %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("remote: ssh host key: %w", err)
	}
	// O_EXCL: never overwrite a key another process just wrote.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("remote: ssh host key: %w", err)
	}
	if _, err := f.Write(pem.EncodeToMemory(block)); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("remote: ssh host key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("remote: ssh host key %s: %w", path, err)
	}
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("remote: ssh host key %s: %w", path, err)
	}
	return s, true, nil
}

// splitLogin splits an SSH user "alice+web-1" into the user and the
// console to land on ("" for the menu).
func splitLogin(s string) (user, target string) {
	user, target, _ = strings.Cut(s, "+")
	return user, target
}

// serveSSH runs one SSH connection: authentication (password,
// keyboard-interactive or public key, rate-limited), then each session
// channel lands on the console named in the login ("user+vm"), in the
// exec command ("ssh user@bridge VM [MODE]"), or on the menu.
func (h *Hub) serveSSH(ctx context.Context, nc net.Conn, loggedIn func()) {
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	ip := hostOf(nc.RemoteAddr())
	log := h.log.With("peer", nc.RemoteAddr().String(), "via", "ssh")
	nc.SetDeadline(time.Now().Add(h.cfg.Remote.LoginTimeout.Duration))
	var (
		lastUser string
		counted  bool // a failure of this connection was recorded already
	)
	conf := *h.sshConf
	conf.PasswordCallback = func(md ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
		name, _ := splitLogin(md.User())
		lastUser = name
		u, err := h.auth.password(ip, name, "ssh", pw)
		if err != nil {
			counted = true
			sleep(ctx, h.cfg.Remote.LoginDelay.Duration)
			return nil, err
		}
		return &ssh.Permissions{Extensions: map[string]string{"method": "password", "user": u.Name}}, nil
	}
	conf.KeyboardInteractiveCallback = func(md ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
		ans, err := ask("", "", []string{"Password: "}, []bool{false})
		if err != nil {
			return nil, err
		}
		if len(ans) != 1 {
			return nil, ErrLoginFailed
		}
		return conf.PasswordCallback(md, []byte(ans[0]))
	}
	conf.PublicKeyCallback = func(md ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		name, _ := splitLogin(md.User())
		lastUser = name
		u, err := h.auth.publicKey(ip, name, key)
		if err != nil {
			if errors.Is(err, ErrLoginBlocked) {
				counted = true // refused, not a failure of its own
			}
			return nil, err
		}
		return &ssh.Permissions{Extensions: map[string]string{"method": "publickey", "user": u.Name, "pubkey-fp": ssh.FingerprintSHA256(key)}}, nil
	}
	sc, chans, reqs, err := ssh.NewServerConn(nc, &conf)
	if err != nil {
		var ae *ssh.ServerAuthError
		if errors.As(err, &ae) && !counted && lastUser != "" {
			h.auth.fail(ip, lastUser, "ssh", "no accepted key or password")
		}
		log.Debug("ssh handshake failed", "err", err)
		return
	}
	defer sc.Close()
	nc.SetDeadline(time.Time{})
	loggedIn()
	name, target := splitLogin(sc.User())
	user := h.auth.user(name)
	if sc.Permissions == nil || user == nil || sc.Permissions.Extensions["user"] != name {
		return // cannot happen: authentication named this user
	}
	log = log.With("user", name)
	h.logins.Add(1)
	log.Info("remote login", "method", sc.Permissions.Extensions["method"], "key", sc.Permissions.Extensions["pubkey-fp"])
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { ssh.DiscardRequests(reqs) })
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.UnknownChannelType, "only session channels")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		wg.Go(func() {
			h.sshSession(ctx, ch, creqs, func() { sc.Close() }, &session{
				h: h, log: log, peer: nc.RemoteAddr().String(), ip: ip, via: "ssh",
				user: user, userName: name, enc: appendRaw, trusted: func() {},
			}, target)
			// One session per connection: the user's console session
			// ended, so does the connection.
			sc.Close()
		})
	}
}

// sshIn is an SSH session channel's input: data from the channel and
// "break" requests (RFC 4335), in arrival order.
type sshIn struct {
	evs  chan inputEvent
	errc chan error
	quit chan struct{}
	intr chan struct{} // interrupt: one pending at most
}

func (s *sshIn) readInput() (inputEvent, error) {
	select {
	case ev := <-s.evs:
		return ev, nil
	case err := <-s.errc:
		return inputEvent{}, err
	case <-s.quit:
		return inputEvent{}, net.ErrClosed
	case <-s.intr:
		return inputEvent{}, errInterrupted
	}
}

func (s *sshIn) push(ev inputEvent) {
	select {
	case s.evs <- ev:
	case <-s.quit:
	}
}

// sshSession serves one session channel.
// killConn closes the whole connection: a channel's Close only asks the
// peer, and a writer stuck on a peer that does not read needs more.
func (h *Hub) sshSession(ctx context.Context, ch ssh.Channel, reqs <-chan *ssh.Request, killConn func(), s *session, target string) {
	in := &sshIn{evs: make(chan inputEvent, 16), errc: make(chan error, 1), quit: make(chan struct{}), intr: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ch.Close()
	defer close(in.quit)
	type start struct {
		pty bool
		cmd string
	}
	startc := make(chan start, 1)
	wg.Go(func() {
		pty, started := false, false
		for req := range reqs {
			ok := true
			switch req.Type {
			case "pty-req":
				pty = !started
			case "env", "window-change", "keepalive@openssh.com":
			case "shell", "exec":
				if started {
					ok = false
					break
				}
				started = true
				var cmd string
				if req.Type == "exec" {
					var p struct{ Cmd string }
					if ssh.Unmarshal(req.Payload, &p) != nil {
						ok = false
						break
					}
					cmd = p.Cmd
				}
				startc <- start{pty, cmd}
			case "break":
				in.push(inputEvent{brk: true})
			default:
				ok = false
			}
			if req.WantReply {
				req.Reply(ok, nil)
			}
		}
	})
	var st start
	select {
	case st = <-startc:
	case <-ctx.Done():
		return
	case <-time.After(h.cfg.Remote.LoginTimeout.Duration):
		return
	}
	wg.Go(func() {
		buf := make([]byte, 4096)
		for {
			n, err := ch.Read(buf)
			if n > 0 {
				in.push(inputEvent{data: append([]byte(nil), buf[:n]...)})
			}
			if err != nil {
				select {
				case in.errc <- err:
				case <-in.quit:
				}
				return
			}
		}
	})
	var status atomic.Uint32
	out := h.newOutQueue(ch, killConn, func(err error) {
		if err == nil {
			ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status.Load()}))
		}
		ch.Close()
	})
	s.in, s.out = in, out
	s.interactive, s.echo = st.pty, func() bool { return st.pty }
	if !st.pty {
		s.errOut = func(m string) { ch.Stderr().Write([]byte(m)) }
	}
	stop := context.AfterFunc(ctx, func() { out.close("\r\n[vspc-bridge: closing]\r\n") })
	err := s.sshRun(ctx, target, st.cmd)
	if err != nil && !errors.Is(err, io.EOF) { // EOF: the client closed its input, a normal end
		status.Store(1)
	}
	stop()
	out.close("")
	out.wait() // bounded: out's kill timer closes a stuck channel
	s.log.Debug("ssh session ended", "err", err)
}

// sshRun picks the console for an SSH session: the login's "+vm", else
// the first word of the command, with an optional mode after it; no
// console named: the menu.
func (s *session) sshRun(ctx context.Context, target, cmd string) error {
	args := strings.Fields(cmd)
	if target == "" && len(args) > 0 {
		target, args = args[0], args[1:]
	}
	if target == "" {
		return s.frontDoor(ctx)
	}
	e, err := find(s.reachable(ctx), target)
	if err != nil {
		s.log.Warn("remote access denied", "console", target, "err", err)
		s.refuse("vspc-bridge: " + userText(err) + "\r\n")
		return ErrNoAccess
	}
	return s.attachEntry(ctx, e, args)
}
