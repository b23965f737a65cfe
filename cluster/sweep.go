package cluster

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Reconnector reconnects a VM serial port through vCenter: it sets the
// serial device's connectable.connected to false, then true, so that ESXi
// opens a new connection to the proxy (notes ha-etcd.md §1.4: nothing
// public says ESXi reconnects a proxied port by itself).
type Reconnector interface {
	Reconnect(ctx context.Context, p PortInfo) error
}

// SweepConfig configures the reconnect sweep the leader runs.
type SweepConfig struct {
	// Grace is how long a port whose owner died may stay unclaimed (its VM
	// may come back by itself) before it is reconnected. Default 30s.
	Grace time.Duration
	// Rate bounds Reconnect calls per second; default 10.
	Rate int
	// Reconnector reconnects ports; nil only logs the ports that should be.
	Reconnector Reconnector
}

// SweepStats are the reconnect sweep's counts, for logs and metrics.
type SweepStats struct {
	Toggled     int64         // ports reconnected through vCenter
	Reconnected int64         // toggled ports that were claimed again afterwards
	Failed      int64         // Reconnect calls that failed
	LastTime    time.Duration // toggle → claimed again, for the last reconnected port
	MaxTime     time.Duration // the longest such time
}

type sweeper struct {
	n   *Node
	cfg SweepConfig

	mu      sync.Mutex
	orphans map[string]time.Time // portinfo key → first seen orphaned (by this leader)
	toggled map[string]time.Time // ports/ key → when it was reconnected
	stats   SweepStats
}

// StartSweep runs the reconnect sweep: on whichever member is the leader,
// every Grace/2 it looks for ports whose last owner is no longer a member,
// that nobody claimed since and whose VM was attached; those still
// unclaimed after Grace are reconnected through cfg.Reconnector, at most
// Rate per second. It stops when the node closes.
func (n *Node) StartSweep(cfg SweepConfig) {
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 10
	}
	s := &sweeper{n: n, cfg: cfg, orphans: map[string]time.Time{}, toggled: map[string]time.Time{}}
	n.mu.Lock()
	n.sweep = s
	n.mu.Unlock()
	n.wg.Go(s.loop)
	n.wg.Go(s.watchBack)
}

// SweepStats returns the sweep's counts (zero without StartSweep).
func (n *Node) SweepStats() SweepStats {
	n.mu.Lock()
	s := n.sweep
	n.mu.Unlock()
	if s == nil {
		return SweepStats{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *sweeper) loop() {
	every := max(s.cfg.Grace/2, 50*time.Millisecond)
	for {
		select {
		case <-s.n.ctx.Done():
			return
		case <-time.After(every):
		}
		if !s.n.IsLeader() {
			s.mu.Lock()
			clear(s.orphans) // a new leader counts the grace from its own look
			s.mu.Unlock()
			continue
		}
		s.scan()
	}
}

// scan reads portinfo/ and ports/ in one snapshot and reconnects what is
// due.
func (s *sweeper) scan() {
	n := s.n
	ctx, cancel := context.WithTimeout(n.ctx, 2*n.cfg.CallTimeout)
	defer cancel()
	n.op()
	r, err := n.cli.Txn(ctx).Then(
		clientv3.OpGet(n.key(kPortInfo), clientv3.WithPrefix()),
		clientv3.OpGet(n.key(kPorts), clientv3.WithPrefix(), clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return
	}
	owned := map[string]bool{}
	for _, kv := range r.Responses[1].GetResponseRange().Kvs {
		owned[strings.TrimPrefix(string(kv.Key), n.key(kPorts))] = true
	}
	now := time.Now()
	type due struct {
		key  string
		rev  int64
		info PortInfo
	}
	var todo []due
	s.mu.Lock()
	seen := map[string]bool{}
	for _, kv := range r.Responses[0].GetResponseRange().Kvs {
		info, err := decode[PortInfo](kv.Value)
		if err != nil {
			continue
		}
		path := info.Port.path()
		k := string(kv.Key)
		if owned[path] {
			delete(s.orphans, k) // its VM came back (Stats.CameBack on the member it reached)
			continue
		}
		if !info.Attached || !info.Swept.IsZero() {
			continue
		}
		if _, alive := n.MemberByID(info.Member); alive {
			continue
		}
		seen[k] = true
		first, ok := s.orphans[k]
		if !ok {
			s.orphans[k] = now
			continue
		}
		if now.Sub(first) >= s.cfg.Grace {
			todo = append(todo, due{k, kv.ModRevision, info})
		}
	}
	for k := range s.orphans {
		if !seen[k] {
			delete(s.orphans, k) // claimed or gone
		}
	}
	s.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	n.log.Info("reconnecting VM serial ports whose member died and whose VM did not come back", "ports", len(todo), "grace", s.cfg.Grace)
	gap := time.Second / time.Duration(s.cfg.Rate)
	for i, d := range todo {
		if i > 0 {
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(gap):
			}
		}
		if !n.IsLeader() {
			return
		}
		// Mark it swept first (fenced by its revision): one reconnect per
		// port, whichever leader gets there.
		d.info.Swept = time.Now()
		n.op()
		ok, err := n.cli.Txn(n.ctx).If(clientv3.Compare(clientv3.ModRevision(d.key), "=", d.rev)).
			Then(clientv3.OpPut(d.key, mustJSON(d.info))).Commit()
		if err != nil || !ok.Succeeded {
			continue
		}
		s.mu.Lock()
		delete(s.orphans, d.key)
		s.mu.Unlock()
		if s.cfg.Reconnector == nil {
			n.log.Warn("VM serial port should be reconnected (no vCenter configured)", "vm", d.info.VMName, "port", d.info.Port.String(), "last_member", d.info.Member)
			continue
		}
		// Timed from before the call: the VM may be back before it returns.
		s.mu.Lock()
		s.toggled[d.info.Port.path()] = d.info.Swept
		s.mu.Unlock()
		rctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
		err = s.cfg.Reconnector.Reconnect(rctx, d.info)
		cancel()
		s.mu.Lock()
		if err != nil {
			s.stats.Failed++
			delete(s.toggled, d.info.Port.path())
		} else {
			s.stats.Toggled++
		}
		s.mu.Unlock()
		if err != nil {
			n.log.Warn("reconnecting a VM serial port through vCenter failed", "vm", d.info.VMName, "port", d.info.Port.String(), "err", err)
		} else {
			n.log.Info("VM serial port reconnected through vCenter", "vm", d.info.VMName, "port", d.info.Port.String(), "last_member", d.info.Member)
		}
	}
}

// watchBack times how long reconnected ports take to be claimed again.
func (s *sweeper) watchBack() {
	n := s.n
	for n.ctx.Err() == nil {
		wctx, cancel := context.WithCancel(n.ctx)
		ch := n.cli.Watch(wctx, n.key(kPorts), clientv3.WithPrefix(), clientv3.WithFilterDelete())
		for resp := range ch {
			if resp.Err() != nil {
				break
			}
			now := time.Now()
			s.mu.Lock()
			for _, ev := range resp.Events {
				path := strings.TrimPrefix(string(ev.Kv.Key), n.key(kPorts))
				if at, ok := s.toggled[path]; ok {
					d := now.Sub(at)
					s.stats.Reconnected++
					s.stats.LastTime = d
					s.stats.MaxTime = max(s.stats.MaxTime, d)
					delete(s.toggled, path)
				}
			}
			s.mu.Unlock()
		}
		cancel()
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Orphans lists the ports whose last owner is no longer a member and that
// nobody claimed since (for status).
func (n *Node) Orphans(ctx context.Context) ([]PortInfo, error) {
	n.op()
	r, err := n.cli.Txn(ctx).Then(
		clientv3.OpGet(n.key(kPortInfo), clientv3.WithPrefix()),
		clientv3.OpGet(n.key(kPorts), clientv3.WithPrefix(), clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return nil, err
	}
	owned := map[string]bool{}
	for _, kv := range r.Responses[1].GetResponseRange().Kvs {
		owned[strings.TrimPrefix(string(kv.Key), n.key(kPorts))] = true
	}
	var out []PortInfo
	for _, kv := range r.Responses[0].GetResponseRange().Kvs {
		info, err := decode[PortInfo](kv.Value)
		if err != nil || owned[info.Port.path()] || !info.Attached {
			continue
		}
		if _, alive := n.MemberByID(info.Member); !alive {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b PortInfo) int { return strings.Compare(a.Port.String(), b.Port.String()) })
	return out, nil
}
