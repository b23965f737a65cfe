package cluster

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vspc-bridge/vspc-bridge/vspc"
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
	next    time.Time            // the next Reconnect a relay or drop watch may make (pace)
	drops   map[PortID]time.Time // ports whose VM connection dropped abnormally → when (WatchDropped)
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
	s := &sweeper{n: n, cfg: cfg, orphans: map[string]time.Time{}, toggled: map[string]time.Time{}, drops: map[PortID]time.Time{}}
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

// PortStates is what the relay watch asks of the vspc server (a
// *vspc.Server): the ports it serves and whether their VM is connected.
type PortStates interface {
	Ports() []vspc.PortInfo
}

// watchRelayed runs when a VM connection another member relayed here has
// ended. The leader's sweep only looks at ports whose owner died; this
// port's owner (this member) lives and waits for its VM within its grace
// period, but if the relay died, ESXi most likely does not dial again by
// itself. So: once the relay is no longer a member (its lease ended) and
// the port is still detached Grace after the drop, the port is reconnected
// through vCenter (counted with the sweep's). It gives up when the VM is
// back (attached or in a vMotion), the port is gone, or the relay is still
// a member a lease and a grace after the drop (then the host dropped the
// connection itself, as it might on a single bridge).
func (n *Node) watchRelayed(port PortID, relay string, ports PortStates) {
	if port.VM == "" || relay == "" || ports == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.sweep; s != nil && !n.closed { // under n.mu: not after Close's wg.Wait began
		n.wg.Go(func() { s.watchRelayed(port, relay, ports) })
	}
}

func (s *sweeper) watchRelayed(port PortID, relay string, ports PortStates) {
	n := s.n
	ended := time.Now()
	every := max(s.cfg.Grace/4, 50*time.Millisecond)
	giveUp := ended.Add(n.cfg.LeaseTTL + s.cfg.Grace + n.cfg.CallTimeout)
	var info vspc.PortInfo
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(every):
		}
		var ok bool
		if info, ok = portState(ports, port); !ok || info.State != "detached" {
			return
		}
		if _, alive := n.MemberByID(relay); alive {
			if time.Now().After(giveUp) {
				return
			}
			continue
		}
		if time.Since(ended) >= s.cfg.Grace {
			break
		}
	}
	s.reconnect(port, info, ended, ports, "the member that relayed its connection died", nil, "relay", relay)
}

// reconnect toggles port, detached since ended, through vCenter (paced at
// the sweep's rate) and times its return, as the sweep does for a dead
// owner's ports: the owner's own reconnects (watchRelayed, watchDropped).
// why ends the log messages; still, when set, is asked again once the
// pace allows the call (false: give up); attrs name the cause in the logs.
func (s *sweeper) reconnect(port PortID, info vspc.PortInfo, ended time.Time, ports PortStates, why string, still func() bool, attrs ...any) {
	n := s.n
	every := max(s.cfg.Grace/4, 50*time.Millisecond)
	pi := PortInfo{Port: port, VMName: info.VMName, Direction: info.Direction, Member: n.Member(), Seen: ended}
	attrs = append([]any{"vm", info.VMName, "port", port.String()}, attrs...)
	if s.cfg.Reconnector == nil {
		n.log.Warn("VM serial port should be reconnected: "+why+" (no vCenter configured)", attrs...)
		return
	}
	if !s.pace() {
		return
	}
	if info, ok := portState(ports, port); !ok || info.State != "detached" || still != nil && !still() {
		return // back while waiting for its turn
	}
	at := time.Now()
	rctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	err := s.cfg.Reconnector.Reconnect(rctx, pi)
	cancel()
	s.mu.Lock()
	if err != nil {
		s.stats.Failed++
	} else {
		s.stats.Toggled++
	}
	s.mu.Unlock()
	if err != nil {
		n.log.Warn("reconnecting a VM serial port through vCenter failed", append(attrs, "err", err)...)
		return
	}
	n.log.Info("VM serial port reconnected through vCenter: "+why, attrs...)
	// Time its return, as the sweep does for a dead owner's ports.
	for time.Since(at) < 2*time.Minute {
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(every):
		}
		info, ok := portState(ports, port)
		if !ok {
			return
		}
		if info.State != "detached" {
			d := time.Since(at)
			s.mu.Lock()
			s.stats.Reconnected++
			s.stats.LastTime = d
			s.stats.MaxTime = max(s.stats.MaxTime, d)
			s.mu.Unlock()
			return
		}
	}
}

// WatchDropped is told (vspc.Drops, through the member) that the VM
// connection of port, a port this member serves, ended and the port
// waits its grace period for its VM; ports is the vspc server. The
// leader's sweep only looks at ports whose owner died, and a host that
// lost its connection on a network fault (a reset, a keepalive timeout:
// a keepalived VIP that moved away from this still-alive member, any
// drop on the way) most likely does not dial again by itself. So, when
// abnormal, the port is reconnected through vCenter if it is still
// detached Grace (reconnect_grace) after the drop, counted with the
// sweep's. Nothing is done for a clean close by the host (abnormal false:
// a VM powered off or its serial port disconnected on purpose), and a
// later drop of the same port, of either kind, replaces the watch. The
// port's grace period (vspc grace_period) must outlast reconnect_grace.
func (n *Node) WatchDropped(port PortID, abnormal bool, ports PortStates) {
	if port.VM == "" || ports == nil {
		return
	}
	n.mu.Lock()
	s := n.sweep
	closed := n.closed
	n.mu.Unlock()
	if s == nil || closed {
		return
	}
	// s.mu is never taken under n.mu: the sweep takes n.mu under s.mu
	// (MemberByID).
	ended := time.Now()
	s.mu.Lock()
	if abnormal {
		s.drops[port] = ended
	} else {
		delete(s.drops, port)
	}
	s.mu.Unlock()
	if !abnormal {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed { // under n.mu: not after Close's wg.Wait began
		n.wg.Go(func() { s.watchDropped(port, ended, ports) })
	}
}

func (s *sweeper) watchDropped(port PortID, ended time.Time, ports PortStates) {
	n := s.n
	latest := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.drops[port].Equal(ended)
	}
	defer func() {
		s.mu.Lock()
		if s.drops[port].Equal(ended) {
			delete(s.drops, port)
		}
		s.mu.Unlock()
	}()
	t := time.NewTimer(s.cfg.Grace - time.Since(ended))
	defer t.Stop()
	select {
	case <-n.ctx.Done():
		return
	case <-t.C:
	}
	// A later drop (or the VM's return and a clean close) replaced this
	// watch; a VM back (attached, or in a vMotion) or a port gone needs
	// nothing.
	if !latest() {
		return
	}
	info, ok := portState(ports, port)
	if !ok || info.State != "detached" {
		return
	}
	s.reconnect(port, info, ended, ports, "its connection dropped on a network fault and the VM did not come back", latest)
}

// pace waits for the next Reconnect call the rate allows; false when the
// node closes meanwhile.
func (s *sweeper) pace() bool {
	gap := time.Second / time.Duration(s.cfg.Rate)
	s.mu.Lock()
	now := time.Now()
	at := s.next
	if at.Before(now) {
		at = now
	}
	s.next = at.Add(gap)
	s.mu.Unlock()
	select {
	case <-s.n.ctx.Done():
		return false
	case <-time.After(at.Sub(now)):
		return true
	}
}

// portState finds port among the server's ports.
func portState(ports PortStates, port PortID) (vspc.PortInfo, bool) {
	for _, p := range ports.Ports() {
		vm := p.VCUUID
		if vm == "" && p.VMName != "" {
			vm = "name:" + p.VMName
		}
		if vm == port.VM && p.ServiceURI == port.Service {
			return p, true
		}
	}
	return vspc.PortInfo{}, false
}
