package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Remote consoles across the cluster. Each member's remote hub serves the
// consoles of the direction-server ports that member holds; a user who
// logged in at another member's front door reaches one over a "console"
// stream of the member link:
//
//	front door (member B)                      owner (member A)
//	ServedPorts: ports/ and listen/vm/ in one read
//	DialConsole ── Header{kind "console", port, fence, state} ──►  ServeConsoleStream: A holds the port
//	                                                               under that fence, the hub has the console
//	                                          ◄── Reply{ok | err}   and the user (its own [[user]] table)
//	frames both ways (package remote, forward.go)
//
// The user name in the state is trusted because only a member can open a
// stream: the link's mutual TLS names the member by its certificate from
// the cluster CA, and AdmitPeer checks it against members/<id>. Console
// streams' socket buffers are kept small (consoleSockBuf), so that a user
// who stops reading at the front door back-pressures the owner's console
// soon, through a bounded path.
const consoleSockBuf = 64 << 10

// ServedPort is a port claim as etcd has it, with the direction-server
// listener port assigned to it (0: none).
type ServedPort struct {
	Record PortRecord
	Fence  int64
	Listen int
}

// ServedPorts reads every port any member holds, with their listener
// ports, in one snapshot (a front door's menu).
func (n *Node) ServedPorts(ctx context.Context) ([]ServedPort, error) {
	n.op()
	r, err := n.cli.Txn(ctx).Then(clientv3.OpGet(n.key(kPorts), clientv3.WithPrefix()), clientv3.OpGet(n.key(kListenVM), clientv3.WithPrefix())).Commit()
	if err != nil {
		return nil, fmt.Errorf("cluster: reading port owners: %w", err)
	}
	listen := map[string]int{}
	for _, kv := range r.Responses[1].GetResponseRange().Kvs {
		if v, err := strconv.Atoi(string(kv.Value)); err == nil {
			listen[strings.TrimPrefix(string(kv.Key), n.key(kListenVM))] = v
		}
	}
	var out []ServedPort
	for _, kv := range r.Responses[0].GetResponseRange().Kvs {
		rec, err := decode[PortRecord](kv.Value)
		if err != nil {
			continue
		}
		out = append(out, ServedPort{Record: rec, Fence: kv.CreateRevision, Listen: listen[strings.TrimPrefix(string(kv.Key), n.key(kPorts))]})
	}
	return out, nil
}

// smallBuffers bounds the socket buffers of a console stream's TCP
// connection (under its TLS).
func smallBuffers(c net.Conn) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(consoleSockBuf)
		tc.SetWriteBuffer(consoleSockBuf)
	}
}

// DialConsole opens a console stream to member, which serves port under
// fence, with state (package remote's request: who attaches, and how) in
// the header. It returns the stream once the owner has said yes.
func (f *Forwarder) DialConsole(ctx context.Context, member string, port PortID, fence int64, state []byte) (net.Conn, error) {
	if f.Link == nil {
		return nil, errors.New("cluster: no member link to reach the console over")
	}
	m, ok := f.Node.MemberByID(member)
	if !ok {
		return nil, fmt.Errorf("cluster: member %s is not a live member", member)
	}
	c, _, err := f.Link.Dial(ctx, m.Link, m.ID, Header{Kind: KindConsole, Port: port, Fence: fence, State: state})
	if err != nil {
		return nil, err
	}
	smallBuffers(c)
	return c, nil
}

// ConsoleServer serves console streams: a *remote.Hub.
type ConsoleServer interface {
	ServeForwarded(ctx context.Context, conn net.Conn, from string, state []byte, accept func(error) error)
}

// ServeConsoleStream answers a "console" stream another member opened:
// this member must hold the port under the fence the stream names (a
// member that lost it since refuses); cs checks the rest and serves the
// stream until the attachment ends. It owns s.Conn.
func (f *Forwarder) ServeConsoleStream(ctx context.Context, s *Stream, cs ConsoleServer) {
	n := f.Node
	if !n.holdsPort(s.Header.Port, s.Header.Fence) {
		s.Reply(Reply{Err: fmt.Sprintf("member %s does not hold port %s under fence %d", n.Member(), s.Header.Port, s.Header.Fence)})
		s.Conn.Close()
		n.log.Info("console stream from another member refused: port not held here", "from", s.From, "port", s.Header.Port.String())
		return
	}
	smallBuffers(s.Conn)
	cs.ServeForwarded(ctx, s.Conn, s.From, s.Header.State, func(err error) error {
		if err != nil {
			return s.Reply(Reply{Err: err.Error()})
		}
		return s.Reply(Reply{OK: true})
	})
}
