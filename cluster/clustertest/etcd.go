// Package clustertest starts what the cluster tests need on loopback:
// etcd clusters (embedded in the test process), blackhole proxies that
// cut a path while keeping its sockets open, and an L4 balancer the test
// steers.
package clustertest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vspc-bridge/vspc-bridge/cluster/embedetcd"
)

// Etcd is an etcd cluster of embedded members on 127.0.0.1.
type Etcd struct {
	Members []*embedetcd.Member
	cfgs    []embedetcd.Config
	mu      sync.Mutex
	closed  map[int]bool
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// StartEtcd starts an n-member cluster in the test process (see NewEtcd)
// and stops it when the test ends. Stopping takes etcd about 6 s: tests
// that need no faults of their own share one cluster (NewEtcd in
// TestMain) and keep apart by key prefix.
func StartEtcd(t testing.TB, n int) *Etcd {
	t.Helper()
	e, err := NewEtcd(n, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// NewEtcd starts an n-member cluster on 127.0.0.1 in this process, with
// its data under dir, fsync off and a 500 ms election timeout (leases of
// 1 s or more). The caller closes it.
func NewEtcd(n int, dir string) (*Etcd, error) {
	cfgs := make([]embedetcd.Config, n)
	var initial []string
	token := fmt.Sprintf("vspc-test-%d", time.Now().UnixNano())
	for i := range n {
		name := fmt.Sprintf("e%d", i+1)
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		cfgs[i] = embedetcd.Config{
			Name:          name,
			Dir:           filepath.Join(dir, name),
			ClientURL:     fmt.Sprintf("http://127.0.0.1:%d", cp),
			PeerURL:       fmt.Sprintf("http://127.0.0.1:%d", pp),
			Token:         token,
			TickMs:        50,
			ElectionMs:    500,
			UnsafeNoFsync: true,
			NoGateway:     true,
		}
		initial = append(initial, name+"="+cfgs[i].PeerURL)
	}
	e := &Etcd{Members: make([]*embedetcd.Member, n), cfgs: cfgs, closed: map[int]bool{}}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		cfgs[i].InitialCluster = strings.Join(initial, ",")
		wg.Go(func() {
			e.Members[i], errs[i] = embedetcd.Start(context.Background(), cfgs[i])
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for j, m := range e.Members {
				if m != nil {
					e.Stop(j)
				}
			}
			return nil, fmt.Errorf("clustertest: member %d: %w", i+1, err)
		}
	}
	return e, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Endpoints lists the members' client URLs.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, c := range e.cfgs {
		out = append(out, c.ClientURL)
	}
	return out
}

// Client returns a client of the cluster, closed when the test ends
// (before the cluster: cleanups run last-in first-out).
func (e *Etcd) Client(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	if len(endpoints) == 0 {
		endpoints = e.Endpoints()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: nopZap()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Leader returns the index of the raft leader, or -1.
func (e *Etcd) Leader() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, m := range e.Members {
		if !e.closed[i] && m.IsLeader() {
			return i
		}
	}
	return -1
}

// Stop stops member i (gracefully: etcd hands leadership over first).
func (e *Etcd) Stop(i int) {
	e.mu.Lock()
	if e.closed[i] {
		e.mu.Unlock()
		return
	}
	e.closed[i] = true
	e.mu.Unlock()
	e.Members[i].Close()
}

// Kill stops member i abruptly (no leadership transfer).
func (e *Etcd) Kill(i int) {
	e.mu.Lock()
	if e.closed[i] {
		e.mu.Unlock()
		return
	}
	e.closed[i] = true
	e.mu.Unlock()
	e.Members[i].Kill()
}

// Restart starts a stopped member again on its data directory. A member
// of a cluster that lost its quorum waits for the others: start them
// together (one goroutine each).
func (e *Etcd) Restart(i int) error {
	c := e.cfgs[i]
	c.Existing = true
	m, err := embedetcd.Start(context.Background(), c)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.Members[i] = m
	e.closed[i] = false
	e.mu.Unlock()
	return nil
}

// Close stops every member still running, in parallel.
func (e *Etcd) Close() {
	var wg sync.WaitGroup
	for i := range e.Members {
		wg.Go(func() { e.Stop(i) })
	}
	wg.Wait()
}

func nopZap() *zap.Logger { return zap.NewNop() }
