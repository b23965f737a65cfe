package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The member link joins members over mutual TLS (1.3): one TLS connection
// per stream. A stream opens with a length-prefixed JSON Header from the
// dialing member, answered by a length-prefixed JSON Reply; after an OK
// reply it carries raw bytes both ways until either side closes.
//
//	dialer                                     listener
//	TLS 1.3 handshake, both certificates from the cluster CA, each naming
//	its member in a URI SAN vspc://<cluster>/member/<id>; the listener also
//	checks that members/<id> in etcd lists that certificate's SHA-256
//	u32 len | Header{kind, port, fence, hash, peer, state}  ──►
//	                                         ◄──  u32 len | Reply{ok, err, healthy}
//	raw bytes                                ◄─►  raw bytes
//
// Stream kinds: "vm" carries a VM connection the dialer accepted to the
// member that owns its port; "failsafe" asks whether the listener can
// reach etcd (no bytes follow); "console" attaches a remote user who
// logged in at the dialer's front door to a console the listener serves
// (consoles.go).
const (
	KindVM       = "vm"
	KindFailsafe = "failsafe"
	KindConsole  = "console"
)

// maxFrame bounds a header or reply.
const maxFrame = 1 << 20

// Header opens a stream.
type Header struct {
	Kind  string          `json:"kind"`
	Port  PortID          `json:"port"`
	Fence int64           `json:"fence,omitempty"` // the owner's claim the dialer saw; the owner refuses a stale one
	Hash  string          `json:"hash,omitempty"`  // PEER: SHA-256 of its payload
	Peer  string          `json:"peer,omitempty"`  // the VM host's address, as the dialer sees it
	State json.RawMessage `json:"state,omitempty"` // opaque to the link: the VM connection's hand-off
}

// Reply answers a Header.
type Reply struct {
	OK      bool   `json:"ok"`
	Err     string `json:"err,omitempty"`
	Healthy bool   `json:"healthy,omitempty"` // failsafe: the listener reaches etcd
}

// LinkConfig configures a member's end of the link.
type LinkConfig struct {
	Cluster string           // cluster name in every member's URI SAN
	Member  string           // this member's id
	Cert    *tls.Certificate // this member's certificate and key
	CA      *x509.CertPool   // the cluster CA
	// Admit is asked about every peer that completed the TLS handshake
	// (its member id and certificate SHA-256); an error refuses it.
	// Node.AdmitPeer checks members/<id>, so removing a member from etcd
	// revokes it. nil admits any certificate of the CA.
	Admit            func(id, certSHA256 string) error
	HandshakeTimeout time.Duration // TLS handshake and header; default 5s
	Logger           *slog.Logger
}

// Link is a member's end of the member link.
type Link struct {
	cfg LinkConfig
	log *slog.Logger
	wg  sync.WaitGroup
}

// NewLink returns a link end.
func NewLink(cfg LinkConfig) (*Link, error) {
	if cfg.Cert == nil || cfg.CA == nil {
		return nil, errors.New("cluster: the member link needs a certificate and the cluster CA")
	}
	if err := CheckID(cfg.Cluster); err != nil {
		return nil, err
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Link{cfg: cfg, log: cfg.Logger}, nil
}

// verify checks a peer's chain against the cluster CA and returns its
// member id.
func (l *Link) verify(cs tls.ConnectionState, usage x509.ExtKeyUsage) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("cluster: link peer sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: l.cfg.CA, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", fmt.Errorf("cluster: link peer certificate: %w", err)
	}
	id, err := memberFromCert(leaf, l.cfg.Cluster)
	if err != nil {
		return "", err
	}
	if l.cfg.Admit != nil {
		if err := l.cfg.Admit(id, CertSHA256(leaf.Raw)); err != nil {
			return "", err
		}
	}
	return id, nil
}

func (l *Link) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*l.cfg.Cert},
		ClientAuth:   tls.RequireAnyClientCert, // verified below, against the cluster CA only
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := l.verify(cs, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

func (l *Link) clientTLS(member string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*l.cfg.Cert},
		// Members are named by their certificate's URI SAN, not by the
		// address they are reached at (a VIP, NAT): the chain and the
		// name are checked in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := l.verify(cs, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if id != member {
				return fmt.Errorf("cluster: link peer is member %q, want %q", id, member)
			}
			return nil
		},
	}
}

// Stream is one opened stream on the listening side.
type Stream struct {
	From   string // the dialing member's id
	Header Header
	Conn   net.Conn // the TLS connection; raw bytes after the reply
	once   sync.Once
	err    error
}

// Reply sends the answer to the header. After an OK reply the stream
// carries raw bytes; after a refusal the caller closes it.
func (s *Stream) Reply(r Reply) error {
	s.once.Do(func() {
		s.err = writeFrame(s.Conn, r)
		s.Conn.SetDeadline(time.Time{})
	})
	return s.err
}

// Handler serves one stream. It owns s.Conn and must reply.
type Handler func(ctx context.Context, s *Stream)

// Serve accepts link connections on ln until ctx ends, running h for each
// stream on its own goroutine (tracked: Serve returns after they end). It
// closes ln.
func (l *Link) Serve(ctx context.Context, ln net.Listener, h Handler) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	var conns sync.Map // net.Conn → struct{}: closed when ctx ends
	defer func() {
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		l.wg.Wait()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("cluster: link accept: %w", err)
		}
		conns.Store(nc, struct{}{})
		l.wg.Go(func() {
			defer conns.Delete(nc)
			l.serveConn(ctx, nc, h)
		})
	}
}

func (l *Link) serveConn(ctx context.Context, nc net.Conn, h Handler) {
	tc := tls.Server(nc, l.serverTLS())
	tc.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		l.log.Warn("member link: handshake refused", "peer", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	from, _ := memberFromCert(tc.ConnectionState().PeerCertificates[0], l.cfg.Cluster)
	var hdr Header
	if err := readFrame(tc, &hdr); err != nil {
		l.log.Warn("member link: bad stream header", "member", from, "err", err)
		tc.Close()
		return
	}
	s := &Stream{From: from, Header: hdr, Conn: tc}
	h(ctx, s)
	s.Reply(Reply{Err: "stream not answered"}) // no-op if the handler replied
}

// Dial opens a stream to member at addr. On an OK reply the returned
// connection carries raw bytes; otherwise it is closed and the error says
// why.
func (l *Link) Dial(ctx context.Context, addr, member string, hdr Header) (net.Conn, Reply, error) {
	d := net.Dialer{Timeout: l.cfg.HandshakeTimeout, KeepAlive: 15 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, Reply{}, fmt.Errorf("cluster: link to %s at %s: %w", member, addr, err)
	}
	tc := tls.Client(nc, l.clientTLS(member))
	deadline := time.Now().Add(l.cfg.HandshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	tc.SetDeadline(deadline)
	fail := func(err error) (net.Conn, Reply, error) {
		tc.Close()
		return nil, Reply{}, fmt.Errorf("cluster: link to %s at %s: %w", member, addr, err)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(err)
	}
	if err := writeFrame(tc, hdr); err != nil {
		return fail(err)
	}
	var r Reply
	if err := readFrame(tc, &r); err != nil {
		return fail(err)
	}
	tc.SetDeadline(time.Time{})
	if !r.OK {
		tc.Close()
		return nil, r, fmt.Errorf("cluster: member %s refused the stream: %s", member, r.Err)
	}
	return tc, r, nil
}

// Wait waits for the streams Serve started.
func (l *Link) Wait() { l.wg.Wait() }

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxFrame {
		return fmt.Errorf("cluster: link frame of %d bytes exceeds %d", len(b), maxFrame)
	}
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(b)), uint32(len(b)))
	_, err = w.Write(append(buf, b...))
	return err
}

func readFrame(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxFrame {
		return fmt.Errorf("cluster: link frame of %d bytes exceeds %d", size, maxFrame)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("cluster: link frame: %w", err)
	}
	return nil
}

// AdmitPeer admits a link peer that is a live member whose published
// certificate hash matches (members/<id> in etcd; a member that publishes
// no hash is admitted on its certificate alone).
func (n *Node) AdmitPeer(id, certSHA256 string) error {
	m, ok := n.MemberByID(id)
	if !ok {
		return fmt.Errorf("cluster: link peer %q is not a live member", id)
	}
	if m.CertSHA256 != "" && m.CertSHA256 != certSHA256 {
		return fmt.Errorf("cluster: link peer %q presented a certificate other than the one it published", id)
	}
	return nil
}

// Failsafe asks every other live member, over the link, whether it can
// reach etcd. It holds (true) only when every one of them answers, and
// none can: then nobody can claim anything. Use it as Config.Failsafe.
func Failsafe(l *Link, n *Node) func(ctx context.Context) bool {
	return func(ctx context.Context) bool {
		var others []MemberInfo
		for _, m := range n.Members() {
			if m.ID != n.Member() {
				others = append(others, m)
			}
		}
		if len(others) == 0 {
			return false // nobody to confirm: a member started elsewhere could claim
		}
		var mu sync.Mutex
		hold := true
		var wg sync.WaitGroup
		for _, m := range others {
			wg.Go(func() {
				c, r, err := l.Dial(ctx, m.Link, m.ID, Header{Kind: KindFailsafe})
				if c != nil {
					c.Close()
				}
				if err != nil || r.Healthy {
					n.log.Info("failsafe: another member does not confirm that etcd is down for all", "other", m.ID, "reaches_etcd", r.Healthy, "err", err)
					mu.Lock()
					hold = false
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return hold
	}
}

// AnswerFailsafe replies to a failsafe stream: whether this member can
// reach etcd now. It asks etcd (a linearizable read needs a quorum)
// rather than trusting its last renewal: every member loses etcd at about
// the same moment, and one that has not tried since would say yes.
func (n *Node) AnswerFailsafe(s *Stream) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.CallTimeout/2)
	n.op()
	_, err := n.cli.Get(ctx, n.key(kLeader))
	cancel()
	s.Reply(Reply{OK: true, Healthy: err == nil})
	s.Conn.Close()
}
