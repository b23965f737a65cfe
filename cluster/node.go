package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Clock is a member's time source. Its own clock decides when its lease
// has lapsed (self-fencing), so tests inject one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures a Node. Member and Client are required.
type Config struct {
	Member string           // this member's id, unique in the cluster
	Client *clientv3.Client // owned by the caller; closed after the Node
	Prefix string           // key prefix; default DefaultPrefix

	// LeaseTTL is the member lease's TTL (default 10s): a member that
	// stops renewing loses everything it claimed this long after its last
	// renewal.
	LeaseTTL time.Duration
	// ValidityMargin: the member treats its own lease as lapsed this long
	// before the TTL runs out on its clock (default 2s), and then fences
	// its devices (unless the failsafe holds).
	ValidityMargin time.Duration
	// LockDelay is how long a device claimant waits before opening a
	// device whose last holder vanished by lease expiry rather than a
	// clean release (default 5s; Consul's lock-delay).
	LockDelay time.Duration
	// CallTimeout bounds one etcd call on a latency-sensitive path (the
	// vMotion BEGIN → GOAHEAD path is VM stun time); default 1s.
	CallTimeout time.Duration

	Info MemberInfo // published in members/<id>; ID is set from Member

	// Failsafe is asked when the member's lease lapses on its own clock
	// while etcd is unreachable. It reports whether every other member
	// confirms it cannot reach etcd either (over the member link): then
	// nobody can claim anything and the member keeps its devices
	// (Patroni's DCS failsafe mode). nil: always fence.
	Failsafe func(ctx context.Context) bool

	Clock  Clock        // default: the real clock
	Logger *slog.Logger // default: discard
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.LeaseTTL, 10*time.Second)
	def(&c.ValidityMargin, 2*time.Second)
	def(&c.LockDelay, 5*time.Second)
	def(&c.CallTimeout, time.Second)
	if c.ValidityMargin >= c.LeaseTTL {
		c.ValidityMargin = c.LeaseTTL / 5
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Info.ID = c.Member
}

// Errors callers branch on.
var (
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("cluster: node closed")
	// ErrFenced: the member's lease lapsed on its own clock; it must not
	// claim or open anything until etcd confirms its lease again.
	ErrFenced = errors.New("cluster: member lease lapsed (fenced)")
	// ErrMemberInUse: another live process runs with this member id.
	ErrMemberInUse = errors.New("cluster: member id in use by a live process")
)

// Stats are cumulative counts for status and metrics.
type Stats struct {
	Ops               int64 // etcd requests made (KV, Txn, lease)
	Claims            int64 // claims won
	ClaimConflicts    int64 // claims found held by another member
	Releases          int64
	LeaseLosses       int64 // the member lease was found gone and replaced
	Fences            int64 // times the member fenced its devices
	FailsafeHolds     int64 // lapses where every member confirmed etcd was down for all
	KeepaliveFailures int64
	Takeovers         int64 // pending vMotions of dead members taken over
	LockDelays        int64 // device claims that waited the lock delay
	ClaimsLost        int64 // claims lost to another member after a lease loss
	CameBack          int64 // ports of a dead member claimed here, their VM back without a vCenter reconnect
	SweptBack         int64 // ports of a dead member claimed here after the leader reconnected them
	Forwarded         int64 // VM connections carried to the member that serves their port
	HandedIn          int64 // VM connections other members carried here
	Held              int64 // VM connections held because their port's owner did not answer over the link
	HoldFailed        int64 // of those, given up after owner_wait
	ListenReclaims    int64 // console ports (port_range) reclaimed from a serial port not held, the range being full
}

// Health is the node's view of etcd and of itself.
type Health struct {
	Member     string
	Lease      int64
	Healthy    bool      // the last lease renewal succeeded
	Valid      bool      // the lease is valid on the member's own clock
	Fenced     bool      // devices fenced: lease lapsed, failsafe did not hold
	Failsafe   bool      // lease lapsed, but every member confirmed etcd is down for all
	ValidUntil time.Time // on the member's clock
	LastError  string
	Leader     bool
}

// Node is this process's membership in a cluster: its member lease, the
// claims made under it, the live members (watched) and the leader key.
type Node struct {
	cfg    Config
	cli    *clientv3.Client
	log    *slog.Logger
	clock  Clock
	prefix string

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stats struct {
		ops, claims, conflicts, releases, leaseLosses, fences, failsafe, kaFail, takeovers, lockDelays, lost, cameBack, sweptBack atomic.Int64
		forwarded, handedIn, held, holdFailed, listenReclaims                                                                     atomic.Int64
	}

	renewed chan struct{} // poked when validUntil moves

	// Lock-free copies for Valid: the validity deadline as an offset from
	// base on the member's clock, and whether the failsafe holds.
	base      time.Time
	validOff  atomic.Int64
	failsafeA atomic.Bool

	mu         sync.Mutex // guards the fields below
	lease      clientv3.LeaseID
	leases     map[clientv3.LeaseID]bool // every lease this process held
	validUntil time.Time
	healthy    bool
	fenced     bool
	failsafe   bool
	lastErr    string
	leader     bool
	ports      map[string]*Claim // held port claims by key
	devices    map[string]*Claim // held device claims by key
	members    map[string]MemberInfo
	watchers   []func(id string, up bool)
	migLeases  map[string]clientv3.LeaseID // pending vMotions this member published, by hash
	sweep      *sweeper                    // the reconnect sweep, once started
	devReady   map[string]time.Time        // device key → when its lock delay ends (TryClaimDevice)
	leaving    map[PortID]bool             // ports whose VM was connected when the member began to leave
	closed     bool
}

// Start joins the cluster: it grants the member lease, publishes
// members/<id> under it, and starts renewing it, watching the members and
// competing for leadership. If a live process already uses the member id,
// Start waits for its lease to expire (a restarted member) until ctx ends.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg.setDefaults()
	if cfg.Member == "" || cfg.Client == nil {
		return nil, errors.New("cluster: a member id and an etcd client are required")
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg: cfg, cli: cfg.Client, log: cfg.Logger.With("member", cfg.Member), clock: cfg.Clock, prefix: cfg.Prefix,
		ctx: nctx, cancel: cancel, renewed: make(chan struct{}, 1), base: cfg.Clock.Now(),
		leases: map[clientv3.LeaseID]bool{}, ports: map[string]*Claim{}, devices: map[string]*Claim{}, members: map[string]MemberInfo{},
		devReady: map[string]time.Time{},
	}
	if n.cfg.Info.Started.IsZero() {
		n.cfg.Info.Started = time.Now()
	}
	inUse := false
	for {
		err := n.register(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, ErrMemberInUse) && !inUse {
			n.log.Warn("another process holds this member id; waiting for its lease to expire", "lease_ttl", cfg.LeaseTTL)
			inUse = true
		}
		if ctx.Err() != nil && inUse {
			cancel()
			return nil, fmt.Errorf("%w: %s", ErrMemberInUse, cfg.Member)
		}
		if !errors.Is(err, ErrMemberInUse) {
			cancel()
			return nil, fmt.Errorf("cluster: joining: %w (etcd reachable at %v?)", err, cfg.Client.Endpoints())
		}
		select {
		case <-ctx.Done():
		case <-time.After(cfg.LeaseTTL / 10):
		}
	}
	if err := n.listMembers(ctx); err != nil {
		n.Close(context.Background())
		return nil, err
	}
	n.wg.Go(n.keepAlive)
	n.wg.Go(n.fenceWatch)
	n.wg.Go(n.watchMembers)
	n.log.Info("joined the cluster", "lease", fmt.Sprintf("%x", int64(n.Lease())), "lease_ttl", cfg.LeaseTTL)
	return n, nil
}

func (n *Node) key(s string) string { return n.prefix + s }

func (n *Node) op() { n.stats.ops.Add(1) }

// register grants a lease and publishes members/<id> under it.
func (n *Node) register(ctx context.Context) error {
	t0 := n.clock.Now()
	n.op()
	g, err := n.cli.Grant(ctx, int64((n.cfg.LeaseTTL+time.Second-1)/time.Second))
	if err != nil {
		return err
	}
	id := clientv3.LeaseID(g.ID)
	k := n.key(kMembers + n.cfg.Member)
	n.op()
	r, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, mustJSON(n.cfg.Info), clientv3.WithLease(id))).Commit()
	if err != nil || !r.Succeeded {
		n.op()
		rctx, cancel := context.WithTimeout(context.Background(), n.cfg.CallTimeout)
		n.cli.Revoke(rctx, id)
		cancel()
		if err != nil {
			return err
		}
		return ErrMemberInUse
	}
	n.mu.Lock()
	n.lease = id
	n.leases[id] = true
	n.setValidLocked(t0.Add(time.Duration(g.TTL)*time.Second - n.cfg.ValidityMargin))
	n.healthy = true
	n.fenced, n.failsafe = false, false
	n.failsafeA.Store(false)
	n.mu.Unlock()
	n.poke()
	return nil
}

func (n *Node) poke() {
	select {
	case n.renewed <- struct{}{}:
	default:
	}
}

// Lease is the current member lease.
func (n *Node) Lease() clientv3.LeaseID {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lease
}

// Member is this member's id.
func (n *Node) Member() string { return n.cfg.Member }

// Prefix is the key prefix in etcd.
func (n *Node) Prefix() string { return n.prefix }

// Client is the etcd client the node uses.
func (n *Node) Client() *clientv3.Client { return n.cli }

// keepAlive renews the lease every TTL/3. The validity deadline counts
// from the moment the renewal was *sent* (on this member's clock), so it
// never outlasts the lease on the server.
func (n *Node) keepAlive() {
	every := n.cfg.LeaseTTL / 3
	for {
		n.mu.Lock()
		fast := !n.healthy
		n.mu.Unlock()
		wait := every
		if fast {
			wait = min(every, 500*time.Millisecond) // come back quickly after an outage
		}
		select {
		case <-n.ctx.Done():
			return
		case <-n.clock.After(wait):
		}
		n.renewOnce()
		n.campaign()
	}
}

func (n *Node) renewOnce() {
	t0 := n.clock.Now()
	lease := n.Lease()
	// A renewal that takes longer than this counts as failed (and is
	// tried again within half a second): etcd is not answering.
	ctx, cancel := context.WithTimeout(n.ctx, min(n.cfg.LeaseTTL/3, 2*n.cfg.CallTimeout))
	defer cancel()
	n.op()
	resp, err := n.cli.KeepAliveOnce(ctx, lease)
	if n.ctx.Err() != nil {
		return
	}
	switch {
	case err == nil && resp.TTL > 0:
		n.renewal(t0, lease, resp.TTL)
	case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
		n.stats.leaseLosses.Add(1)
		n.log.Warn("member lease is gone (expired while etcd was unreachable, or revoked); taking a new one and claiming again")
		n.recoverLease()
	default:
		n.stats.kaFail.Add(1)
		n.mu.Lock()
		was := n.healthy
		n.healthy = false
		n.lastErr = err.Error()
		n.mu.Unlock()
		if was {
			n.log.Warn("etcd unreachable: sessions carry on; new claims wait and vMotion BEGIN gets NOTNOW", "err", err)
		}
	}
}

// renewal records a renewal of lease sent at t0 that etcd answered with
// ttl seconds.
func (n *Node) renewal(t0 time.Time, lease clientv3.LeaseID, ttl int64) {
	n.mu.Lock()
	was := n.healthy
	if v := t0.Add(time.Duration(ttl)*time.Second - n.cfg.ValidityMargin); v.After(n.validUntil) {
		n.setValidLocked(v)
	}
	n.healthy = true
	unfence := n.fenced || n.failsafe
	n.fenced, n.failsafe = false, false
	n.failsafeA.Store(false)
	n.lastErr = ""
	n.mu.Unlock()
	n.poke()
	if !was || unfence {
		n.log.Info("etcd reachable again; member lease renewed", "lease", fmt.Sprintf("%x", int64(lease)))
	}
}

// recoverLease takes a new lease after the old one vanished, and claims
// again what the member held: what nobody else took in between is kept;
// what someone else took is lost (its holder is told through Lost).
func (n *Node) recoverLease() {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.LeaseTTL)
	defer cancel()
	if err := n.register(ctx); err != nil {
		n.mu.Lock()
		n.healthy = false
		n.lastErr = err.Error()
		n.mu.Unlock()
		n.log.Warn("cannot take a new member lease yet", "err", err)
		return
	}
	n.mu.Lock()
	claims := slices.Collect(maps.Values(n.ports))
	claims = append(claims, slices.Collect(maps.Values(n.devices))...)
	n.mu.Unlock()
	kept, lost := 0, 0
	for _, c := range claims {
		if err := n.reclaim(ctx, c); err != nil {
			lost++
			n.stats.lost.Add(1)
			n.log.Warn("claim lost to another member while the lease was gone", "key", c.key, "err", err)
			n.drop(c)
			c.lose()
		} else {
			kept++
		}
	}
	n.log.Info("member lease replaced; claims renewed", "lease", fmt.Sprintf("%x", int64(n.Lease())), "kept", kept, "lost", lost)
}

// fenceWatch fences the member's devices when its lease lapses on its own
// clock: before anyone else may claim them (TTL + lock delay later).
func (n *Node) fenceWatch() {
	for {
		n.mu.Lock()
		until := n.validUntil
		n.mu.Unlock()
		now := n.clock.Now()
		if now.Before(until) {
			select {
			case <-n.ctx.Done():
				return
			case <-n.renewed:
			case <-n.clock.After(until.Sub(now)):
			}
			continue
		}
		n.mu.Lock()
		fenced := n.fenced
		n.mu.Unlock()
		if !fenced {
			n.lapsed() // the failsafe is asked again on every round
		}
		select {
		case <-n.ctx.Done():
			return
		case <-n.renewed:
		case <-n.clock.After(n.lapsedEvery()):
		}
	}
}

// lapsedEvery is how often a member past its lease asks the failsafe
// again. While the failsafe holds, the member keeps devices whose claims
// may have ended in etcd (etcd up, every member cut from it): once one
// member reaches etcd again it may claim them and open them after the
// lock delay, so this member must learn of it and close them well within
// that delay: every quarter of it at most.
func (n *Node) lapsedEvery() time.Duration {
	d := min(n.cfg.LeaseTTL/3, time.Second)
	if q := n.cfg.LockDelay / 4; q > 0 {
		d = min(d, q)
	}
	return max(d, 10*time.Millisecond)
}

// lapsed runs when the lease is past its validity on this member's clock.
func (n *Node) lapsed() {
	if n.cfg.Failsafe != nil {
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.CallTimeout)
		hold := n.cfg.Failsafe(ctx)
		cancel()
		if hold {
			n.mu.Lock()
			first := !n.failsafe
			n.failsafe, n.fenced = true, false
			n.failsafeA.Store(true)
			n.mu.Unlock()
			if first {
				n.stats.failsafe.Add(1)
				n.log.Warn("member lease lapsed, but every member confirms etcd is unreachable for all: keeping devices (failsafe)")
			}
			return
		}
		// Another member reaches etcd. Before fencing, one quick
		// renewal: when quorum comes back, the others may answer
		// before this member's next renewal, and its lease is still
		// there. It is bounded by half the validity margin (the lease
		// may still be valid in etcd for the margin) and by a quarter
		// of the lock delay (after a failsafe hold the lease may have
		// ended in etcd, and the member that answered may be waiting
		// out the lock delay to open this member's device): the device
		// closes well before anyone else may open it.
		t0 := n.clock.Now()
		lease := n.Lease()
		quick := n.cfg.ValidityMargin / 2
		if q := n.cfg.LockDelay / 4; q < quick {
			quick = q
		}
		ctx, cancel = context.WithTimeout(n.ctx, quick)
		n.op()
		resp, err := n.cli.KeepAliveOnce(ctx, lease)
		cancel()
		if err == nil && resp.TTL > 0 {
			n.renewal(t0, lease, resp.TTL)
			return
		}
	}
	n.mu.Lock()
	first := !n.fenced
	n.fenced, n.failsafe = true, false
	n.failsafeA.Store(false)
	devs := slices.Collect(maps.Values(n.devices))
	clear(n.devices)
	n.mu.Unlock()
	if first {
		n.stats.fences.Add(1)
		n.log.Warn("member lease lapsed on this member's clock: closing its devices before anyone else may open them", "devices", len(devs))
	}
	for _, c := range devs {
		c.lose()
	}
}

// Valid reports whether the member may act as the owner of what it
// claimed: its lease is valid on its own clock, or the failsafe holds.
// It takes no lock: devices ask before every write.
func (n *Node) Valid() bool {
	return n.clock.Now().Sub(n.base) < time.Duration(n.validOff.Load()) || n.failsafeA.Load()
}

// setValidLocked moves the validity deadline. Caller holds n.mu.
func (n *Node) setValidLocked(v time.Time) {
	n.validUntil = v
	n.validOff.Store(int64(v.Sub(n.base))) // monotonic: immune to wall-clock steps
}

// Healthy reports whether etcd answered the last lease renewal: new
// claims and vMotion hand-overs need it.
func (n *Node) Healthy() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.healthy && n.clock.Now().Before(n.validUntil)
}

// Health returns the node's state for status.
func (n *Node) Health() Health {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.clock.Now()
	return Health{
		Member: n.cfg.Member, Lease: int64(n.lease),
		Healthy: n.healthy && now.Before(n.validUntil), Valid: now.Before(n.validUntil) || n.failsafe,
		Fenced: n.fenced, Failsafe: n.failsafe, ValidUntil: n.validUntil, LastError: n.lastErr, Leader: n.leader && now.Before(n.validUntil),
	}
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	s := &n.stats
	return Stats{
		Ops: s.ops.Load(), Claims: s.claims.Load(), ClaimConflicts: s.conflicts.Load(), Releases: s.releases.Load(),
		LeaseLosses: s.leaseLosses.Load(), Fences: s.fences.Load(), FailsafeHolds: s.failsafe.Load(),
		KeepaliveFailures: s.kaFail.Load(), Takeovers: s.takeovers.Load(), LockDelays: s.lockDelays.Load(), ClaimsLost: s.lost.Load(),
		CameBack: s.cameBack.Load(), SweptBack: s.sweptBack.Load(),
		Forwarded: s.forwarded.Load(), HandedIn: s.handedIn.Load(), Held: s.held.Load(), HoldFailed: s.holdFailed.Load(),
		ListenReclaims: s.listenReclaims.Load(),
	}
}

// campaign takes the leader key when it is free. The leader runs the
// cluster-wide chores (the reconnect sweep). Leadership is a key under the
// member lease, so it ends with the member.
func (n *Node) campaign() {
	n.mu.Lock()
	lease, healthy := n.lease, n.healthy
	n.mu.Unlock()
	if !healthy {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.CallTimeout)
	defer cancel()
	k := n.key(kLeader)
	n.op()
	r, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, n.cfg.Member, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return
	}
	leader := r.Succeeded
	if !leader {
		if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			leader = string(kvs[0].Value) == n.cfg.Member && clientv3.LeaseID(kvs[0].Lease) == lease
		}
	}
	n.mu.Lock()
	was := n.leader
	n.leader = leader
	n.mu.Unlock()
	if leader && !was {
		n.log.Info("this member is the cluster leader")
	}
}

// IsLeader reports whether this member holds the leader key (as of its
// last check, at most a third of the lease TTL ago) and its lease is valid.
func (n *Node) IsLeader() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader && n.clock.Now().Before(n.validUntil)
}

// Leader returns the leader's member id ("" when none or unknown).
func (n *Node) Leader(ctx context.Context) (string, error) {
	n.op()
	r, err := n.cli.Get(ctx, n.key(kLeader))
	if err != nil {
		return "", err
	}
	if len(r.Kvs) == 0 {
		return "", nil
	}
	return string(r.Kvs[0].Value), nil
}

// Leaving says the member is about to leave (a shutdown: a rolling
// upgrade) and which of its ports have their VM connected now. The
// member drops those connections as it stops; its ports' releases then
// record them as attached, so that the leader's sweep reconnects them
// through vCenter after reconnect_grace unless their VMs dial again by
// themselves (a port released otherwise, its VM gone, is not swept).
func (n *Node) Leaving(attached []PortID) {
	n.mu.Lock()
	n.leaving = map[PortID]bool{}
	for _, p := range attached {
		n.leaving[p] = true
	}
	n.mu.Unlock()
	if len(attached) > 0 {
		n.log.Info("leaving the cluster: the VM ports connected here are left for the leader to reconnect through vCenter unless their VMs dial again", "ports", len(attached))
	}
}

// leftAttached reports whether p's VM was connected when the member
// began to leave.
func (n *Node) leftAttached(p PortID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leaving[p]
}

// Close stops renewing and revokes the lease: everything the member
// claimed is released at once (a clean leave; devices were closed by
// their holders before). It is idempotent.
func (n *Node) Close(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	lease := n.lease
	devs := slices.Collect(maps.Values(n.devices))
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
	// Devices still held were closed by their users (or are about to be):
	// mark them released cleanly so that the next holder need not wait.
	for _, c := range devs {
		c.Release(ctx)
	}
	n.op()
	_, err := n.cli.Revoke(ctx, lease)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("cluster: revoking the member lease: %w", err)
	}
	return nil
}

// decode unmarshals a JSON value; a broken value is reported as such.
func decode[T any](b []byte) (T, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("cluster: bad value in etcd: %w", err)
	}
	return v, nil
}
