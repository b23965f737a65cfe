// Package embedetcd runs one etcd member inside the process
// (go.etcd.io/etcd/server/v3/embed): `vspc-bridge etcd` for small sites,
// and the tests' clusters. It only fills in etcd's own configuration;
// consensus, leases and watches are etcd's.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config describes one member. Name, Dir, ClientURL, PeerURL and
// InitialCluster are required.
type Config struct {
	Name           string // member name, unique in the cluster
	Dir            string // data directory
	ClientURL      string // http(s)://host:port clients use (listened on and advertised)
	PeerURL        string // http(s)://host:port other members use
	InitialCluster string // "m1=http://127.0.0.1:2380,m2=…": every member's PeerURL
	Token          string // initial cluster token: members of other clusters cannot join
	Existing       bool   // join an existing cluster instead of forming a new one

	// Client-facing TLS (an https ClientURL): the server certificate,
	// and with ClientCA set, client certificates are required and checked.
	CertFile, KeyFile, ClientCA string
	// Peer TLS (an https PeerURL): certificate and CA, mutual.
	PeerCertFile, PeerKeyFile, PeerCA string

	// TickMs and ElectionMs are etcd's heartbeat and election timeout
	// (defaults 100 and 1000). The shortest lease etcd grants is
	// 1.5 × ElectionMs.
	TickMs, ElectionMs uint
	// UnsafeNoFsync skips fsync: tests only.
	UnsafeNoFsync bool
	// NoGateway turns off etcd's JSON gateway (/v3/kv/…): its loopback
	// gRPC client makes a graceful stop wait its full request timeout.
	NoGateway bool
	// Logger receives etcd's own log (zap); nil discards it.
	Logger *zap.Logger
	// ReadyTimeout bounds the wait for the member to join its cluster;
	// default 60s.
	ReadyTimeout time.Duration
}

// Member is a running etcd member.
type Member struct {
	e   *embed.Etcd
	cfg Config
}

// Start starts the member and waits until it has joined its cluster (a
// new cluster needs a quorum of its members started) or ctx ends.
func Start(ctx context.Context, c Config) (*Member, error) {
	ec, err := c.etcdConfig()
	if err != nil {
		return nil, err
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: member %s: %w", c.Name, err)
	}
	rt := c.ReadyTimeout
	if rt <= 0 {
		rt = time.Minute
	}
	t := time.NewTimer(rt)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return &Member{e: e, cfg: c}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedetcd: member %s: %w", c.Name, err)
	case <-ctx.Done():
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedetcd: member %s: %w", c.Name, ctx.Err())
	case <-t.C:
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedetcd: member %s: not ready after %v (is a quorum of the initial cluster started?)", c.Name, rt)
	}
}

func (c Config) etcdConfig() (*embed.Config, error) {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("a member name is required"))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("a data directory is required"))
	}
	cu, err := url.Parse(c.ClientURL)
	if err != nil || (cu.Scheme != "http" && cu.Scheme != "https") || cu.Host == "" {
		errs = append(errs, fmt.Errorf("client URL %q: want http://host:port or https://host:port", c.ClientURL))
	}
	pu, err := url.Parse(c.PeerURL)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		errs = append(errs, fmt.Errorf("peer URL %q: want http://host:port or https://host:port", c.PeerURL))
	}
	if c.InitialCluster == "" {
		errs = append(errs, errors.New("the initial cluster (name=peerURL,…) is required"))
	} else if !strings.Contains(c.InitialCluster, c.Name+"=") {
		errs = append(errs, fmt.Errorf("the initial cluster %q does not name this member %q", c.InitialCluster, c.Name))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("embedetcd: %w", errors.Join(errs...))
	}
	ec := embed.NewConfig()
	ec.Name, ec.Dir = c.Name, c.Dir
	ec.ListenClientUrls = []url.URL{*cu}
	ec.AdvertiseClientUrls = []url.URL{*cu}
	ec.ListenPeerUrls = []url.URL{*pu}
	ec.AdvertisePeerUrls = []url.URL{*pu}
	ec.InitialCluster = c.InitialCluster
	if c.Token != "" {
		ec.InitialClusterToken = c.Token
	}
	if c.Existing {
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	if c.TickMs > 0 {
		ec.TickMs = c.TickMs
	}
	if c.ElectionMs > 0 {
		ec.ElectionMs = c.ElectionMs
	}
	ec.UnsafeNoFsync = c.UnsafeNoFsync
	ec.EnableGRPCGateway = !c.NoGateway
	// A long-running member compacts its history once an hour; the
	// bridge's watches resume from a revision and re-list on compaction.
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "1h"
	ec.ClientTLSInfo = transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.ClientCA, ClientCertAuth: c.ClientCA != ""}
	ec.PeerTLSInfo = transport.TLSInfo{CertFile: c.PeerCertFile, KeyFile: c.PeerKeyFile, TrustedCAFile: c.PeerCA, ClientCertAuth: c.PeerCA != ""}
	lg := c.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	return ec, nil
}

// ClientURL is where clients reach the member.
func (m *Member) ClientURL() string { return m.cfg.ClientURL }

// Name is the member's name.
func (m *Member) Name() string { return m.cfg.Name }

// Err reports a fatal error of the running member.
func (m *Member) Err() <-chan error { return m.e.Err() }

// IsLeader reports whether the member is the raft leader now.
func (m *Member) IsLeader() bool { return m.e.Server.Leader() == m.e.Server.MemberID() }

// Kill stops the member abruptly, as a crash would look to its peers and
// clients: no leadership transfer, connections cut.
func (m *Member) Kill() {
	m.e.Server.HardStop()
	m.e.Close()
}

// Close stops the member gracefully (it hands leadership over first) and
// waits for it. Close clients first: etcd waits for their streams.
func (m *Member) Close() { m.e.Close() }
