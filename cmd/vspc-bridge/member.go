package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/cluster"
	"github.com/vspc-bridge/vspc-bridge/cmd/vspc-bridge/internal/vc"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// member is this bridge's membership in a cluster ([cluster]): the etcd
// client, the node (lease, claims, membership, leader, reconnect sweep)
// and the member link.
type member struct {
	cfg  *configs.Cluster
	cli  *clientv3.Client
	node *cluster.Node
	link *cluster.Link
	fwd  *cluster.Forwarder
	log  *slog.Logger

	// srv resumes the VM connections other members hand over ("vm"
	// streams); set by serve once the vspc server exists (streams that
	// come before are refused).
	srv atomic.Pointer[vspc.Server]
	// hub serves the console streams of users who logged in at another
	// member's front door ("console" streams); set by serve with remote
	// access on (streams that come before, or without it, are refused).
	hub atomic.Pointer[remote.Hub]

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex // guards the cached snapshot
	snap   *admin.ClusterStatus
	snapAt time.Time
}

// startMember joins the cluster. It fails when etcd cannot be reached
// within a minute (or ctx ends), or the certificates cannot be read.
func startMember(ctx context.Context, cfg *configs.Config, log *slog.Logger, version string) (*member, error) {
	cc := cfg.Cluster
	log = log.With("component", "cluster")
	var etcdTLS *tls.Config
	if cc.EtcdCA != "" || cc.EtcdCert != "" {
		var err error
		if etcdTLS, err = cluster.ClientTLS(cc.EtcdCA, cc.EtcdCert, cc.EtcdKey); err != nil {
			return nil, err
		}
	}
	linkCert, err := loadKeyPair(cc.LinkCert, cc.LinkKey)
	if err != nil {
		return nil, fmt.Errorf("[cluster] link_cert/link_key: %w", err)
	}
	caPEM, err := os.ReadFile(cc.LinkCA)
	if err != nil {
		return nil, fmt.Errorf("[cluster] link_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("[cluster] link_ca %s holds no PEM certificate", cc.LinkCA)
	}
	ln, err := net.Listen("tcp", cc.LinkListen)
	if err != nil {
		return nil, fmt.Errorf("[cluster] link_listen: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cc.Endpoints, TLS: etcdTLS, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("cluster: etcd client: %w", err)
	}
	m := &member{cfg: cc, cli: cli, log: log}
	m.link, err = cluster.NewLink(cluster.LinkConfig{Cluster: cc.Name, Member: cc.Member, Cert: linkCert, CA: pool, Logger: log,
		Admit: func(id, sum string) error { return m.node.AdmitPeer(id, sum) }})
	if err != nil {
		ln.Close()
		cli.Close()
		return nil, err
	}
	jctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	node, err := cluster.Start(jctx, cluster.Config{
		Member: cc.Member, Client: cli, Prefix: cc.Prefix,
		LeaseTTL: cc.LeaseTTL.Duration, ValidityMargin: cc.ValidityMargin.Duration, LockDelay: cc.LockDelay.Duration, CallTimeout: cc.EtcdTimeout.Duration,
		Info:     cluster.MemberInfo{Link: cc.LinkAddr(), VSPC: cfg.ProxyURI(), Admin: cfg.Admin.Listen, CertSHA256: cluster.CertSHA256(linkCert.Certificate[0]), Version: version},
		Failsafe: func(ctx context.Context) bool { return cluster.Failsafe(m.link, m.node)(ctx) },
		Logger:   log,
	})
	if err != nil {
		ln.Close()
		cli.Close()
		return nil, err
	}
	m.node = node
	wait := cc.OwnerWait.Duration
	if wait == 0 {
		wait = -1 // "0s": do not hold
	}
	m.fwd = &cluster.Forwarder{Node: node, Link: m.link, OwnerWait: wait}
	lctx, lcancel := context.WithCancel(context.Background())
	m.cancel = lcancel
	m.wg.Go(func() {
		m.link.Serve(lctx, ln, func(ctx context.Context, s *cluster.Stream) {
			switch s.Header.Kind {
			case cluster.KindFailsafe:
				node.AnswerFailsafe(s)
			case cluster.KindVM:
				srv := m.srv.Load()
				if srv == nil {
					s.Reply(cluster.Reply{Err: "member " + cc.Member + " is not serving VMs yet"})
					s.Conn.Close()
					return
				}
				m.fwd.ServeStream(s, srv)
			case cluster.KindConsole:
				hub := m.hub.Load()
				if hub == nil {
					s.Reply(cluster.Reply{Err: "member " + cc.Member + " does not serve remote consoles"})
					s.Conn.Close()
					return
				}
				m.fwd.ServeConsoleStream(ctx, s, hub)
			default:
				s.Reply(cluster.Reply{Err: fmt.Sprintf("stream kind %q is not served by member %s", s.Header.Kind, cc.Member)})
				s.Conn.Close()
			}
		})
	})
	if cc.ReconnectGrace.Duration > 0 {
		node.StartSweep(cluster.SweepConfig{Grace: cc.ReconnectGrace.Duration, Rate: cc.ReconnectRate, Reconnector: vcReconnector(log)})
	}
	return m, nil
}

// vcReconnector reconnects ports through the vCenter named by GOVC_URL
// (with GOVC_USERNAME, GOVC_PASSWORD, GOVC_INSECURE, as the vc commands
// take it); nil without GOVC_URL: the sweep then only logs.
func vcReconnector(log *slog.Logger) cluster.Reconnector {
	if os.Getenv("GOVC_URL") == "" {
		log.Info("no GOVC_URL: ports of a dead member that do not come back are logged, not reconnected through vCenter")
		return nil
	}
	return govcReconnector{}
}

type govcReconnector struct{}

func (govcReconnector) Reconnect(ctx context.Context, p cluster.PortInfo) error {
	name, byName := strings.CutPrefix(p.Port.VM, "name:")
	if !byName && len(p.Port.VM) != 36 || byName && name == "" {
		return fmt.Errorf("port %s: neither a VC UUID nor a name to find the VM by", p.Port.String())
	}
	c, err := vc.Login(ctx, vc.ConnFromEnv(os.Getenv))
	if err != nil {
		return err
	}
	defer c.Logout(context.Background())
	if byName {
		// The VM sent no VC UUID: find it by the name it sent.
		return vc.ReconnectByName(ctx, c.Client, name, p.Port.Service)
	}
	return vc.Reconnect(ctx, c.Client, p.Port.VM, p.Port.Service)
}

// status returns the cluster part of /api/v1/status. The per-member
// ownership counts read every port key: they are refreshed at most every
// 2 s (a metrics scrape asks too).
func (m *member) status() *admin.ClusterStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.snap != nil && time.Since(m.snapAt) < 2*time.Second {
		s := *m.snap
		m.fillLocal(&s)
		return &s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*m.cfg.EtcdTimeout.Duration)
	defer cancel()
	s := &admin.ClusterStatus{Name: m.cfg.Name, Member: m.cfg.Member}
	if l, err := m.node.Leader(ctx); err == nil {
		s.Leader = l
	}
	owned, err := m.node.Ownership(ctx)
	for _, mi := range m.node.Members() {
		s.Members = append(s.Members, admin.ClusterMember{ID: mi.ID, Link: mi.Link, VSPC: mi.VSPC, Admin: mi.Admin, Version: mi.Version, Started: mi.Started,
			Ports: owned.Ports[mi.ID], Devices: owned.Devices[mi.ID]})
	}
	if err == nil {
		if o, err := m.node.Orphans(ctx); err == nil {
			s.Orphans = len(o)
		}
	}
	for _, ep := range m.cli.Endpoints() {
		e := admin.EtcdEndpoint{Endpoint: ep}
		r, err := m.cli.Status(ctx, ep)
		if err != nil {
			e.Error = err.Error()
		} else {
			e.OK, e.Version, e.Leader, e.DBSize = true, r.Version, r.Leader == r.Header.MemberId, r.DbSize
		}
		s.Etcd = append(s.Etcd, e)
	}
	m.snap, m.snapAt = s, time.Now()
	c := *s
	m.fillLocal(&c)
	return &c
}

// owners returns the ports of vm that other members serve, for
// sessions.
func (m *member) owners(ctx context.Context, vm string) ([]admin.PortOwner, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*m.cfg.EtcdTimeout.Duration)
	defer cancel()
	held, err := m.node.PortsOf(ctx, vm)
	if err != nil {
		return nil, err
	}
	var out []admin.PortOwner
	for _, h := range held {
		if h.Record.Member == m.cfg.Member {
			continue // listed as a session of this bridge
		}
		o := admin.PortOwner{VM: h.Record.VMName, VCUUID: h.Record.Port.VCUUID(), ServiceURI: h.Record.Port.Service, Member: h.Record.Member, Since: h.Record.Since}
		if mi, ok := m.node.MemberByID(h.Record.Member); ok {
			o.MemberAdmin = mi.Admin
		}
		out = append(out, o)
	}
	return out, nil
}

// fillLocal sets what the node knows without asking etcd.
func (m *member) fillLocal(s *admin.ClusterStatus) {
	h := m.node.Health()
	st, sw := m.node.Stats(), m.node.SweepStats()
	s.IsLeader, s.Healthy, s.Valid, s.Fenced, s.Failsafe, s.LastError = h.Leader, h.Healthy, h.Valid, h.Fenced, h.Failsafe, h.LastError
	s.Counters = admin.ClusterCounters{Ops: st.Ops, Claims: st.Claims, ClaimConflicts: st.ClaimConflicts, Releases: st.Releases,
		LeaseLosses: st.LeaseLosses, Fences: st.Fences, FailsafeHolds: st.FailsafeHolds, KeepaliveFailures: st.KeepaliveFailures,
		Takeovers: st.Takeovers, LockDelays: st.LockDelays, ClaimsLost: st.ClaimsLost, CameBack: st.CameBack, SweptBack: st.SweptBack,
		Forwarded: st.Forwarded, HandedIn: st.HandedIn, Held: st.Held, HoldFailed: st.HoldFailed, ListenReclaims: st.ListenReclaims,
		Toggled: sw.Toggled, Reconnected: sw.Reconnected, ReconnectFailed: sw.Failed,
		LastReconnectSeconds: sw.LastTime.Seconds(), MaxReconnectSeconds: sw.MaxTime.Seconds()}
}

// close leaves the cluster: the link stops, the lease is revoked (every
// claim released at once), the client closes.
func (m *member) close() {
	m.cancel()
	m.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.node.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		m.log.Warn("leaving the cluster", "err", err)
	}
	m.cli.Close()
}

// consoles is the cluster as the remote hub's front doors see it: the
// ports other members hold (from etcd), and console streams to them over
// the member link.
type consoles struct{ m *member }

// Consoles implements remote.Cluster.
func (c consoles) Consoles(ctx context.Context) ([]remote.ClusterConsole, error) {
	ps, err := c.m.node.ServedPorts(ctx)
	if err != nil {
		return nil, err
	}
	var out []remote.ClusterConsole
	for _, p := range ps {
		r := p.Record
		if r.Member == c.m.cfg.Member {
			continue // this bridge's own: the hub lists them itself
		}
		if _, ok := c.m.node.MemberByID(r.Member); !ok {
			continue // its lease is ending
		}
		out = append(out, remote.ClusterConsole{Key: vspc.PortKey{VM: r.Port.VM, Service: r.Port.Service}.String(), VMName: r.VMName, VCUUID: r.Port.VCUUID(),
			ServiceURI: r.Port.Service, Direction: r.Direction, Member: r.Member, Listen: p.Listen, Fence: p.Fence})
	}
	return out, nil
}

// DialConsole implements remote.Cluster.
func (c consoles) DialConsole(ctx context.Context, rc remote.ClusterConsole, state []byte) (net.Conn, error) {
	id, ok := cluster.PortIDOf(vspc.Request{VCUUID: rc.VCUUID, VMName: rc.VMName, ServiceURI: rc.ServiceURI})
	if !ok {
		return nil, errors.New("cluster: a console without a VM identity")
	}
	return c.m.fwd.DialConsole(ctx, rc.Member, id, rc.Fence, state)
}

// attachedPorts are the cluster names of the ports whose VM is connected
// (attached, or in a vMotion).
func attachedPorts(ps []vspc.PortInfo) []cluster.PortID {
	var out []cluster.PortID
	for _, p := range ps {
		if p.State == "detached" {
			continue
		}
		if id, ok := cluster.PortIDOf(vspc.Request{VCUUID: p.VCUUID, VMName: p.VMName, ServiceURI: p.ServiceURI}); ok {
			out = append(out, id)
		}
	}
	return out
}

// Dropped implements vspc.Drops: the member's node watches a port whose
// VM connection dropped on a network fault, to reconnect it through
// vCenter if the VM does not come back within reconnect_grace.
func (m *member) Dropped(req vspc.Request, abnormal bool) {
	id, ok := cluster.PortIDOf(req)
	srv := m.srv.Load()
	if !ok || srv == nil {
		return
	}
	m.node.WatchDropped(id, abnormal, srv)
}
