package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Forwarding (the active/active topology: an L4 balancer spreads VM
// connections over the members). A DO-PROXY or VMOTION-PEER that reaches
// a member other than the port's owner is carried over the member link to
// the owner: the receiving member hands the connection's state over on a
// "vm" stream (vspc.Handoff in the header) and relays bytes both ways;
// the owner resumes the connection (vspc.Server.ServeHandoff) as if the
// host had connected to it.
//
//	DO-PROXY at B for P    ports/P held by live A ─► stream to A, fence = ports/P's CreateRevision
//	                       ports/P free           ─► B claims it (vspc.ErrServeHere)
//	                       A does not answer      ─► hold: ask again every 250 ms until A answers,
//	                                                 or its lease ends (P is then free), or OwnerWait
//	PEER at B              vmotion/<hash> absent  ─► refused (unknown or used)
//	                       owner A holds P        ─► stream to A (A checks the secret)
//	                       P free (A is gone)     ─► B takes the hand-over over (TakeOverMigration)
//	                       A does not answer      ─► hold, as above: a refused PEER is a failed vMotion
//
// The owner answers a DO-PROXY stream only for a port it holds under the
// fence the stream names (a member that lost the port since refuses it,
// and the relay asks etcd again). A handed-over connection is never handed
// on again.

// OwnerError: another live member serves the port. It wraps
// vspc.ErrElsewhere, so that the vspc server forwards the connection.
type OwnerError struct{ Owner Owner }

func (e *OwnerError) Error() string {
	return fmt.Sprintf("cluster: the port is served by member %s (since %s)", e.Owner.Record.Member, e.Owner.Record.Since.Format(time.RFC3339))
}

func (e *OwnerError) Unwrap() error { return vspc.ErrElsewhere }

// Forwarder carries VM connections to the members that serve their ports
// over the member link (vspc.Forwarder), and serves the streams other
// members open (Serve).
type Forwarder struct {
	Node *Node
	Link *Link
	// OwnerWait bounds how long a connection whose port's owner does not
	// answer over the link is held: until the owner answers, or its lease
	// ends (then this member claims the port or takes the hand-over over).
	// Default (0): the lease TTL + 2 s, so that a dead owner's lease ends
	// within it; negative: no hold (one attempt).
	OwnerWait time.Duration
	// DialTimeout bounds one attempt to open a stream (TLS handshake and
	// the owner's answer); default 2 s.
	DialTimeout time.Duration
}

func (f *Forwarder) ownerWait() time.Duration {
	switch {
	case f.OwnerWait < 0:
		return 0
	case f.OwnerWait > 0:
		return f.OwnerWait
	}
	return f.Node.cfg.LeaseTTL + 2*time.Second
}

// errOwnerRefused: the member etcd named answered, and refused the
// stream (it no longer holds the port under that fence).
var errOwnerRefused = errors.New("cluster: the owner refused the stream")

// handoffPort is the cluster name of the port a DO-PROXY hand-off is for.
func handoffPort(h *vspc.Handoff) (PortID, bool) {
	return PortIDOf(vspc.Request{VCUUID: h.VCUUID, VMName: h.VMName, ServiceURI: h.ServiceURI})
}

// Forward implements vspc.Forwarder: a DO-PROXY whose port another member
// holds goes to that member.
func (f *Forwarder) Forward(ctx context.Context, h *vspc.Handoff, why error) (net.Conn, error) {
	port, ok := handoffPort(h)
	if !ok {
		return nil, errors.New("cluster: a VM without identity cannot be forwarded")
	}
	var first *Owner
	if oe := (*OwnerError)(nil); errors.As(why, &oe) {
		first = &oe.Owner
	}
	return f.hold(ctx, "DO-PROXY", &port, func(ctx context.Context) (*Owner, error) {
		if first != nil {
			o := first
			first = nil
			return o, nil
		}
		return f.Node.PortOwner(ctx, port)
	}, func(ctx context.Context, o *Owner) (net.Conn, error) {
		return f.dial(ctx, o, Header{Kind: KindVM, Port: port, Fence: o.Fence, Peer: h.Host}, h)
	}, func() (net.Conn, error) {
		return nil, vspc.ErrServeHere
	})
}

// hold resolves the owner (owner) and opens a stream to it (open) until
// one succeeds, the port is free (free), or OwnerWait passes: a port
// whose owner is dead frees when its lease ends, which OwnerWait outlasts.
func (f *Forwarder) hold(ctx context.Context, what string, port *PortID,
	owner func(context.Context) (*Owner, error),
	open func(context.Context, *Owner) (net.Conn, error),
	free func() (net.Conn, error)) (net.Conn, error) {
	n := f.Node
	wait := f.ownerWait()
	start := time.Now()
	if wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, start.Add(wait))
		defer cancel()
	}
	var last error
	held := false
	for try := 1; ; try++ {
		cctx, ccancel := context.WithTimeout(ctx, n.cfg.CallTimeout)
		o, err := owner(cctx)
		ccancel()
		switch {
		case errors.Is(err, vspc.ErrNoHandOver):
			return nil, err // final: nothing to wait for
		case err != nil:
			last = err
		case o == nil || o.Record.Member == n.Member():
			// Free (or this member's own: the vspc server adopts it).
			if held {
				n.log.Info("held VM connection: its port is free now", "what", what, "port", port.String(), "held", time.Since(start).Round(time.Millisecond))
			}
			return free()
		default:
			c, err := open(ctx, o)
			if err == nil {
				if held {
					n.log.Info("held VM connection: the port's owner answered", "what", what, "port", port.String(), "owner", o.Record.Member)
				}
				return c, nil
			}
			last = err
			if try == 1 && errors.Is(err, errOwnerRefused) {
				continue // a stale record: read the owner again at once
			}
		}
		if wait == 0 {
			return nil, fmt.Errorf("cluster: %s for port %s: the owner did not answer (owner_wait 0s: not held): %w", what, port, last)
		}
		if !held {
			held = true
			n.stats.held.Add(1)
			n.log.Warn("VM connection held: its port's owner does not answer over the member link; waiting for it or for its lease to end",
				"what", what, "port", port.String(), "owner_wait", wait, "err", last)
		}
		select {
		case <-ctx.Done():
			n.stats.holdFailed.Add(1)
			return nil, fmt.Errorf("cluster: %s for port %s: the owner did not answer within owner_wait (%s): %w", what, port, wait, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// dial opens a "vm" stream to the owner o with h in its header.
func (f *Forwarder) dial(ctx context.Context, o *Owner, hdr Header, h *vspc.Handoff) (net.Conn, error) {
	if f.Link == nil {
		return nil, errors.New("cluster: no member link to carry the connection over")
	}
	m, ok := f.Node.MemberByID(o.Record.Member)
	if !ok {
		return nil, fmt.Errorf("cluster: the port's owner %s is not a live member (its lease is ending)", o.Record.Member)
	}
	state, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	hdr.State = state
	d := f.DialTimeout
	if d <= 0 {
		d = 2 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	c, r, err := f.Link.Dial(dctx, m.Link, m.ID, hdr)
	if err != nil {
		if r.Err != "" {
			return nil, fmt.Errorf("%w: %w", errOwnerRefused, err)
		}
		return nil, err
	}
	f.Node.stats.forwarded.Add(1)
	return c, nil
}

// TakeOver implements the PEER side of vspc.HandOvers for HandOvers: the
// hand-over's owner gets the connection, or, when it is gone, this member
// takes the hand-over over.
func (f *Forwarder) TakeOver(ctx context.Context, h *vspc.Handoff) (vspc.PeerResult, error) {
	n := f.Node
	hash := PeerHash(h.Payload)
	var m *Migration
	var rev int64
	var took *vspc.PeerResult
	var port PortID // known once the record is read
	c, err := f.hold(ctx, "VMOTION-PEER", &port, func(ctx context.Context) (*Owner, error) {
		var o *Owner
		var err error
		m, rev, o, err = n.peerRoute(ctx, hash)
		if err != nil {
			return nil, err
		}
		port = m.Port
		if o != nil && o.Record.Member != m.Owner {
			// The port moved on since the hand-over began (its VM came
			// back elsewhere): nobody can finish it.
			return nil, fmt.Errorf("%w: the port is now served by %s, not by %s who began the hand-over", vspc.ErrNoHandOver, o.Record.Member, m.Owner)
		}
		if o != nil && o.Record.Member == n.Member() {
			return nil, fmt.Errorf("%w: this member holds the port but has no such hand-over", vspc.ErrNoHandOver)
		}
		return o, nil
	}, func(ctx context.Context, o *Owner) (net.Conn, error) {
		return f.dial(ctx, o, Header{Kind: KindVM, Port: m.Port, Fence: o.Fence, Hash: hash, Peer: h.Host}, h)
	}, func() (net.Conn, error) {
		// The port is free: the owner is gone. Take the hand-over over.
		cctx, cancel := context.WithTimeout(ctx, 2*n.cfg.CallTimeout)
		defer cancel()
		if _, err := n.TakeOverMigration(cctx, hash, m, rev); err != nil {
			if errors.Is(err, ErrNoMigration) {
				return nil, fmt.Errorf("%w: taken by another member first", vspc.ErrNoHandOver)
			}
			return nil, err
		}
		req := vspc.Request{ServiceURI: m.Port.Service, VMName: m.VMName, Direction: vspc.DirClient}
		if m.Direction == vspc.DirServer.String() {
			req.Direction = vspc.DirServer
		}
		if !strings.HasPrefix(m.Port.VM, "name:") {
			req.VCUUID = m.Port.VM
		}
		took = &vspc.PeerResult{Req: req, SeqLen: m.SeqLen}
		return nil, nil
	})
	switch {
	case took != nil:
		return *took, nil
	case err != nil:
		if errors.Is(err, vspc.ErrNoHandOver) || errors.Is(err, ErrNoMigration) {
			return vspc.PeerResult{}, fmt.Errorf("%w: %v", vspc.ErrNoHandOver, err)
		}
		return vspc.PeerResult{}, err
	}
	return vspc.PeerResult{Conn: c}, nil
}

// peerRoute reads a pending hand-over and its port's owner in one
// snapshot.
func (n *Node) peerRoute(ctx context.Context, hash string) (*Migration, int64, *Owner, error) {
	vk := n.key(kVMotion + hash)
	n.op()
	r, err := n.cli.Txn(ctx).Then(clientv3.OpGet(vk)).Commit()
	if err != nil {
		return nil, 0, nil, fmt.Errorf("cluster: looking up a vMotion: %w", err)
	}
	kvs := r.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, 0, nil, fmt.Errorf("%w: %w", vspc.ErrNoHandOver, ErrNoMigration)
	}
	m, err := decode[Migration](kvs[0].Value)
	if err != nil {
		return nil, 0, nil, err
	}
	o, err := n.PortOwner(ctx, m.Port)
	if err != nil {
		return nil, 0, nil, err
	}
	return &m, kvs[0].ModRevision, o, nil
}

// Resumer resumes handed-over VM connections (a *vspc.Server).
type Resumer interface {
	ServeHandoff(nc net.Conn, h *vspc.Handoff)
}

// ServeStream answers a "vm" stream another member opened: it checks the
// hand-off (and, for a DO-PROXY, that this member holds the port under
// the fence the stream names), replies, and resumes the connection on
// srv until it ends. It owns s.Conn.
func (f *Forwarder) ServeStream(s *Stream, srv Resumer) {
	n := f.Node
	refuse := func(why string) {
		s.Reply(Reply{Err: why})
		s.Conn.Close()
		n.log.Info("VM stream from another member refused", "from", s.From, "port", s.Header.Port.String(), "reason", why)
	}
	h, err := vspc.ParseHandoff(s.Header.State)
	if err != nil {
		refuse(err.Error())
		return
	}
	if h.Kind == vspc.HandoffProxy {
		port, ok := handoffPort(h)
		if !ok || port != s.Header.Port {
			refuse("the hand-off names another port than the stream")
			return
		}
		if !n.holdsPort(port, s.Header.Fence) {
			refuse(fmt.Sprintf("member %s does not hold port %s under fence %d", n.Member(), port, s.Header.Fence))
			return
		}
	}
	h.Via = s.From
	if err := s.Reply(Reply{OK: true}); err != nil {
		s.Conn.Close()
		return
	}
	n.stats.handedIn.Add(1)
	srv.ServeHandoff(s.Conn, h)
	// The connection ended. If it ended because the relay died, the VM
	// may need a reconnect through vCenter (watchRelayed).
	ps, _ := srv.(PortStates)
	n.watchRelayed(s.Header.Port, s.From, ps)
}

// holdsPort reports whether this member holds port under fence.
func (n *Node) holdsPort(p PortID, fence int64) bool {
	n.mu.Lock()
	c := n.ports[n.key(kPorts+p.path())]
	n.mu.Unlock()
	return c != nil && !c.gone.Load() && c.Fence() == fence
}
