package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claim is a key this member holds under its lease: a VM serial port or a
// device. Its fence is the key's CreateRevision: a later holder's is
// always higher, so a stale holder's fenced write fails.
type Claim struct {
	n      *Node
	key    string // full etcd key
	kind   string // "port" or "device"
	name   string // port id or device, for logs
	holder string // devices: the port using it
	value  string
	fence  atomic.Int64
	lost   chan struct{}
	once   sync.Once
	gone   atomic.Bool // released or lost
}

// Fence is the claim's fencing token (the key's CreateRevision). It
// changes when the member re-claims after losing its lease.
func (c *Claim) Fence() int64 { return c.fence.Load() }

// Key is the claim's etcd key.
func (c *Claim) Key() string { return c.key }

// Lost is closed when the claim is no longer this member's: its lease
// lapsed on the member's clock (devices), or another member took the key
// while the lease was gone. The holder must stop using what it claimed.
func (c *Claim) Lost() <-chan struct{} { return c.lost }

func (c *Claim) lose() {
	c.gone.Store(true)
	c.once.Do(func() { close(c.lost) })
}

// Release gives the claim back: the key is deleted if it is still this
// claim's (fenced by its CreateRevision). For a device it records a clean
// release, so the next holder need not wait the lock delay. Idempotent.
func (c *Claim) Release(ctx context.Context) error {
	if c.gone.Swap(true) {
		return nil
	}
	c.n.drop(c)
	c.once.Do(func() { close(c.lost) })
	ops := []clientv3.Op{clientv3.OpDelete(c.key)}
	switch c.kind {
	case "device":
		h := deviceHistory{Member: c.n.cfg.Member, Lease: int64(c.n.Lease()), Released: true}
		ops = append(ops, clientv3.OpPut(c.n.key(kDevHist+strings.TrimPrefix(c.key, c.n.key(kDevices))), mustJSON(h)))
	case "port":
		var rec PortRecord
		if r, err := decode[PortRecord]([]byte(c.value)); err == nil {
			rec = r
		}
		// Attached: the member dropped the VM as it left (Leaving), the
		// VM did not go away: the sweep is to reconnect it.
		info := PortInfo{Port: rec.Port, VMName: rec.VMName, Direction: rec.Direction, Member: c.n.cfg.Member, Attached: c.n.leftAttached(rec.Port), Seen: time.Now()}
		ops = append(ops, clientv3.OpPut(c.n.key(kPortInfo+rec.Port.path()), mustJSON(info)))
	}
	ctx, cancel := context.WithTimeout(ctx, c.n.cfg.CallTimeout)
	defer cancel()
	c.n.op()
	_, err := c.n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(c.key), "=", c.Fence())).Then(ops...).Commit()
	if err != nil {
		// The key stays until the member lease ends; the next holder then
		// waits the lock delay.
		return fmt.Errorf("cluster: releasing %s %s: %w", c.kind, c.name, err)
	}
	c.n.stats.releases.Add(1)
	return nil
}

// drop forgets a claim the node renews.
func (n *Node) drop(c *Claim) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.ports
	if c.kind == "device" {
		m = n.devices
	}
	if m[c.key] == c {
		delete(m, c.key)
	}
}

// hold registers a claim the node renews after a lease loss.
func (n *Node) hold(c *Claim) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c.kind == "device" {
		n.devices[c.key] = c
	} else {
		n.ports[c.key] = c
	}
}

// reclaim claims c's key again under the current lease.
func (n *Node) reclaim(ctx context.Context, c *Claim) error {
	lease := n.Lease()
	n.op()
	r, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(c.key), "=", 0)).
		Then(clientv3.OpPut(c.key, c.value, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(c.key)).Commit()
	if err != nil {
		return err
	}
	if r.Succeeded {
		c.fence.Store(r.Header.Revision)
		return nil
	}
	kvs := r.Responses[0].GetResponseRange().Kvs
	if len(kvs) > 0 && clientv3.LeaseID(kvs[0].Lease) == lease {
		c.fence.Store(kvs[0].CreateRevision)
		return nil
	}
	return errors.New("held by another member")
}

// retry runs f (each try bounded by the call timeout) until it succeeds,
// fails for a reason other than etcd being unreachable, or ctx ends: while
// etcd is unavailable, or this member's lease has lapsed, new claims wait.
func (n *Node) retry(ctx context.Context, what string, f func(ctx context.Context) error) error {
	backoff := 50 * time.Millisecond
	for {
		var err error
		if !n.Valid() {
			err = ErrFenced
		} else {
			cctx, cancel := context.WithTimeout(ctx, n.cfg.CallTimeout)
			err = f(cctx)
			cancel()
			if err == nil || !retryable(err) {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: %s: %w (last: %v)", what, ctx.Err(), err)
		case <-n.ctx.Done():
			return ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// errRetry: try again at once (a race with another member).
var errRetry = errors.New("cluster: lost a race; trying again")

// retryable reports errors that mean "etcd did not answer in time".
func retryable(err error) bool {
	var held *HeldError
	switch {
	case errors.As(err, &held):
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrFenced), errors.Is(err, errRetry):
		return true
	}
	// gRPC Unavailable and friends.
	s := err.Error()
	return strings.Contains(s, "Unavailable") || strings.Contains(s, "no leader") || strings.Contains(s, "timed out") ||
		strings.Contains(s, "connection") || strings.Contains(s, "lease not found")
}

// Owner describes the member that holds a port.
type Owner struct {
	Record PortRecord
	Fence  int64 // the key's CreateRevision
	Lease  int64
}

// ClaimPort claims a VM serial port for this member, unless another
// member holds it: then it returns that member's record and no claim.
// While etcd is unreachable it waits (until ctx ends). A port this member
// already holds under its lease is adopted.
func (n *Node) ClaimPort(ctx context.Context, rec PortRecord) (*Claim, *Owner, error) {
	rec.Member = n.cfg.Member
	if rec.Since.IsZero() {
		rec.Since = time.Now()
	}
	k := n.key(kPorts + rec.Port.path())
	val := mustJSON(rec)
	info := mustJSON(PortInfo{Port: rec.Port, VMName: rec.VMName, Direction: rec.Direction, Member: n.cfg.Member, Attached: true, Seen: rec.Since})
	var claim *Claim
	var owner *Owner
	err := n.retry(ctx, "claiming port "+rec.Port.String(), func(ctx context.Context) error {
		lease := n.Lease()
		n.op()
		ik := n.key(kPortInfo + rec.Port.path())
		r, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpGet(ik), clientv3.OpPut(k, val, clientv3.WithLease(lease)), clientv3.OpPut(ik, info)).
			Else(clientv3.OpGet(k)).Commit()
		if err != nil {
			return err
		}
		c := &Claim{n: n, key: k, kind: "port", name: rec.Port.String(), value: val, lost: make(chan struct{})}
		if r.Succeeded {
			c.fence.Store(r.Header.Revision)
			claim = c
			if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
				if old, err := decode[PortInfo](kvs[0].Value); err == nil && old.Attached && old.Member != n.cfg.Member {
					if _, alive := n.MemberByID(old.Member); !alive {
						if old.Swept.IsZero() {
							n.stats.cameBack.Add(1) // its VM came back without a vCenter reconnect
						} else {
							n.stats.sweptBack.Add(1)
						}
					}
				}
			}
			return nil
		}
		kvs := r.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return errRetry // the key vanished between compare and read
		}
		if clientv3.LeaseID(kvs[0].Lease) == lease {
			c.fence.Store(kvs[0].CreateRevision)
			claim = c
			return nil
		}
		cur, err := decode[PortRecord](kvs[0].Value)
		if err != nil {
			return err
		}
		owner = &Owner{Record: cur, Fence: kvs[0].CreateRevision, Lease: kvs[0].Lease}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if claim != nil {
		n.stats.claims.Add(1)
		n.hold(claim)
		return claim, nil, nil
	}
	n.stats.conflicts.Add(1)
	return nil, owner, nil
}

// PortOwner reads who holds a port (nil when nobody does).
func (n *Node) PortOwner(ctx context.Context, p PortID) (*Owner, error) {
	n.op()
	r, err := n.cli.Get(ctx, n.key(kPorts+p.path()))
	if err != nil {
		return nil, err
	}
	if len(r.Kvs) == 0 {
		return nil, nil
	}
	cur, err := decode[PortRecord](r.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	return &Owner{Record: cur, Fence: r.Kvs[0].CreateRevision, Lease: r.Kvs[0].Lease}, nil
}

// HeldError says another port or member holds a device.
type HeldError struct {
	Device string
	Record DeviceRecord
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("cluster: device %s is held by member %s (port %s) since %s", e.Device, e.Record.Member, e.Record.Holder, e.Record.Since.Format(time.RFC3339))
}

// ClaimDevice claims a device before it is opened. holder names the port
// that will use it (for status). A device held by anyone else gives a
// *HeldError. If the last holder vanished by lease expiry instead of
// releasing the device, the claim waits the lock delay before it returns:
// that holder fences itself (closes the device) within its validity
// margin, well before. While etcd is unreachable, or this member's own
// lease has lapsed, it waits (until ctx ends).
func (n *Node) ClaimDevice(ctx context.Context, device, holder string) (*Claim, error) {
	return n.claimDevice(ctx, device, holder, false)
}

// LockDelayError: the device is claimed for this member, but may be opened
// only from Until (its last holder vanished without releasing it). Claim
// it again then: the claim is adopted and returned without error.
type LockDelayError struct {
	Device string
	Until  time.Time
}

func (e *LockDelayError) Error() string {
	return fmt.Sprintf("cluster: device %s claimed; its last holder vanished without releasing it, so it opens after the lock delay (at %s)", e.Device, e.Until.Format(time.RFC3339Nano))
}

// TryClaimDevice is ClaimDevice without the wait: during the lock delay it
// returns the claim's *LockDelayError (the claim is held meanwhile), so a
// caller that opens many devices does not hold a worker for each.
func (n *Node) TryClaimDevice(ctx context.Context, device, holder string) (*Claim, error) {
	return n.claimDevice(ctx, device, holder, true)
}

func (n *Node) claimDevice(ctx context.Context, device, holder string, nowait bool) (*Claim, error) {
	dk := deviceKey(device)
	k := n.key(kDevices + dk)
	hk := n.key(kDevHist + dk)
	rec := DeviceRecord{Member: n.cfg.Member, Device: device, Holder: holder, Since: time.Now()}
	val := mustJSON(rec)
	var claim *Claim
	var prev *deviceHistory
	err := n.retry(ctx, "claiming device "+device, func(ctx context.Context) error {
		lease := n.Lease()
		hist := mustJSON(deviceHistory{Member: n.cfg.Member, Lease: int64(lease)})
		n.op()
		r, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpGet(hk), clientv3.OpPut(k, val, clientv3.WithLease(lease)), clientv3.OpPut(hk, hist)).
			Else(clientv3.OpGet(k)).Commit()
		if err != nil {
			return err
		}
		c := &Claim{n: n, key: k, kind: "device", name: device, holder: holder, value: val, lost: make(chan struct{})}
		kvs := r.Responses[0].GetResponseRange().Kvs
		if r.Succeeded {
			c.fence.Store(r.Header.Revision)
			claim = c
			if len(kvs) > 0 {
				h, err := decode[deviceHistory](kvs[0].Value)
				if err == nil {
					prev = &h
				}
			}
			return nil
		}
		if len(kvs) == 0 {
			return errRetry
		}
		cur, err := decode[DeviceRecord](kvs[0].Value)
		if err != nil {
			return err
		}
		if clientv3.LeaseID(kvs[0].Lease) == lease && cur.Holder == holder {
			c.fence.Store(kvs[0].CreateRevision) // ours already (fenced, then valid again, or in its lock delay)
			claim = c
			return nil
		}
		return &HeldError{Device: device, Record: cur}
	})
	if err != nil {
		return nil, err
	}
	n.stats.claims.Add(1)
	n.hold(claim)
	n.mu.Lock()
	until, delayed := n.devReady[claim.key]
	if delayed && !n.clock.Now().Before(until) {
		delete(n.devReady, claim.key)
		delayed = false
	}
	n.mu.Unlock()
	if delayed { // adopted during its lock delay
		if nowait {
			return claim, &LockDelayError{Device: device, Until: until}
		}
		select {
		case <-n.clock.After(until.Sub(n.clock.Now())):
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: claiming device %s: %w during the lock delay", device, ctx.Err())
		}
	}
	if prev != nil && !prev.Released && !n.ownLease(prev.Lease) {
		n.stats.lockDelays.Add(1)
		n.log.Info("device's last holder vanished without releasing it; waiting the lock delay before opening",
			"device", device, "last_holder", prev.Member, "lock_delay", n.cfg.LockDelay)
		if nowait {
			until := n.clock.Now().Add(n.cfg.LockDelay)
			n.mu.Lock()
			n.devReady[claim.key] = until
			n.mu.Unlock()
			return claim, &LockDelayError{Device: device, Until: until}
		}
		select {
		case <-n.clock.After(n.cfg.LockDelay):
		case <-ctx.Done():
			claim.Release(context.Background())
			return nil, fmt.Errorf("cluster: claiming device %s: %w during the lock delay", device, ctx.Err())
		case <-claim.Lost():
			return nil, fmt.Errorf("cluster: claiming device %s: %w during the lock delay", device, ErrFenced)
		}
	}
	return claim, nil
}

func (n *Node) ownLease(l int64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leases[clientv3.LeaseID(l)]
}

// DeviceHolder reads who holds a device (nil when nobody does).
func (n *Node) DeviceHolder(ctx context.Context, device string) (*DeviceRecord, error) {
	n.op()
	r, err := n.cli.Get(ctx, n.key(kDevices+deviceKey(device)))
	if err != nil {
		return nil, err
	}
	if len(r.Kvs) == 0 {
		return nil, nil
	}
	rec, err := decode[DeviceRecord](r.Kvs[0].Value)
	return &rec, err
}

// DeviceGuard is the node's device claims in the shape bridge.DeviceGuard
// wants: Acquire claims (waiting while etcd is unreachable, and the lock
// delay after a holder that vanished), Lost fences, release gives the
// device back cleanly.
func (n *Node) DeviceGuard() *DeviceGuard { return &DeviceGuard{n: n} }

// DeviceGuard adapts a Node's device claims to a bridge.
type DeviceGuard struct{ n *Node }

// Valid reports whether this member may write to its devices: its lease
// is valid on its own clock (or the failsafe holds).
func (g *DeviceGuard) Valid() bool { return g.n.Valid() }

// Forget gives back a device claim still in its lock delay (the port
// went away before it could open the device).
func (g *DeviceGuard) Forget(device, holder string) {
	n := g.n
	key := n.key(kDevices + deviceKey(device))
	n.mu.Lock()
	c := n.devices[key]
	_, delayed := n.devReady[key]
	if delayed {
		delete(n.devReady, key)
	}
	n.mu.Unlock()
	if c == nil || !delayed || c.holder != holder {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.CallTimeout)
	defer cancel()
	c.Release(ctx)
}

// Acquire claims device for holder before it is opened.
func (g *DeviceGuard) Acquire(ctx context.Context, device, holder string) (<-chan struct{}, func(), error) {
	// Not ClaimDevice: a device in its lock delay is reported as not yet
	// openable (the link retries with its backoff) instead of holding one
	// of the bridge's device-open workers for the whole delay.
	c, err := g.n.TryClaimDevice(ctx, device, holder)
	if err != nil {
		return nil, nil, err
	}
	return c.Lost(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), g.n.cfg.CallTimeout)
		defer cancel()
		if err := c.Release(ctx); err != nil {
			g.n.log.Warn("releasing a device claim", "device", device, "err", err)
		}
	}, nil
}

// Ownership counts the ports and devices each member holds (one read of
// each prefix).
type Ownership struct {
	Ports, Devices map[string]int // member id → count
}

// Ownership reads who holds what.
func (n *Node) Ownership(ctx context.Context) (Ownership, error) {
	o := Ownership{Ports: map[string]int{}, Devices: map[string]int{}}
	n.op()
	r, err := n.cli.Txn(ctx).Then(clientv3.OpGet(n.key(kPorts), clientv3.WithPrefix()), clientv3.OpGet(n.key(kDevices), clientv3.WithPrefix())).Commit()
	if err != nil {
		return o, err
	}
	for _, kv := range r.Responses[0].GetResponseRange().Kvs {
		if rec, err := decode[PortRecord](kv.Value); err == nil {
			o.Ports[rec.Member]++
		}
	}
	for _, kv := range r.Responses[1].GetResponseRange().Kvs {
		if rec, err := decode[DeviceRecord](kv.Value); err == nil {
			o.Devices[rec.Member]++
		}
	}
	return o, nil
}

// HeldPort is a port claim as etcd has it.
type HeldPort struct {
	Record PortRecord
	Fence  int64
}

// PortsOf reads the ports of a VM (by VC UUID, or by the name it sent)
// that any member holds. It reads every port key (status-rate use).
func (n *Node) PortsOf(ctx context.Context, vm string) ([]HeldPort, error) {
	n.op()
	r, err := n.cli.Get(ctx, n.key(kPorts), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster: reading port owners: %w", err)
	}
	var out []HeldPort
	for _, kv := range r.Kvs {
		rec, err := decode[PortRecord](kv.Value)
		if err != nil {
			continue
		}
		if strings.EqualFold(rec.Port.VM, vm) || rec.Port.VM == "name:"+vm || rec.VMName == vm {
			out = append(out, HeldPort{Record: rec, Fence: kv.CreateRevision})
		}
	}
	return out, nil
}
