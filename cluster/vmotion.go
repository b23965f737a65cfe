package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrUnavailable: etcd did not confirm this member's lease recently, so a
// hand-over that another member might have to finish cannot be published
// (the bridge answers VMOTION-BEGIN with NOTNOW: the VM stays put).
var ErrUnavailable = errors.New("cluster: etcd unavailable")

// ErrOwnerAlive: a takeover was refused because the port's owner still
// holds it.
var ErrOwnerAlive = errors.New("cluster: the port's owner still holds it")

// ErrNoMigration: no pending hand-over has this hash (wrong secret,
// unknown sequence, or already taken).
var ErrNoMigration = errors.New("cluster: no pending vMotion with this hash")

// PublishMigration stores a pending hand-over under its own lease (TTL
// ttl, the PEER timeout), so that it outlives this member: a survivor can
// finish it if this member dies. Call it between VMOTION-BEGIN and
// GOAHEAD, with a short deadline in ctx; on error answer NOTNOW.
func (n *Node) PublishMigration(ctx context.Context, hash string, m Migration, ttl time.Duration) error {
	if !n.Healthy() {
		return ErrUnavailable
	}
	m.Owner = n.cfg.Member
	if m.Created.IsZero() {
		m.Created = time.Now()
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	n.op()
	g, err := n.cli.Grant(ctx, max(secs, 1))
	if err != nil {
		return fmt.Errorf("cluster: publishing a vMotion: %w", err)
	}
	n.op()
	if _, err := n.cli.Put(ctx, n.key(kVMotion+hash), mustJSON(m), clientv3.WithLease(g.ID)); err != nil {
		n.op()
		rctx, cancel := context.WithTimeout(context.Background(), n.cfg.CallTimeout)
		n.cli.Revoke(rctx, g.ID)
		cancel()
		return fmt.Errorf("cluster: publishing a vMotion: %w", err)
	}
	n.mu.Lock()
	if n.migLeases == nil {
		n.migLeases = map[string]clientv3.LeaseID{}
	}
	n.migLeases[hash] = g.ID
	n.mu.Unlock()
	return nil
}

// DeleteMigration removes a hand-over this member published (COMPLETE,
// ABORT, timeout): its lease is revoked. Errors are only logged by
// callers: the record expires with its lease anyway.
func (n *Node) DeleteMigration(ctx context.Context, hash string) error {
	n.mu.Lock()
	id, ok := n.migLeases[hash]
	delete(n.migLeases, hash)
	n.mu.Unlock()
	if !ok {
		return nil
	}
	n.op()
	if _, err := n.cli.Revoke(ctx, id); err != nil {
		return fmt.Errorf("cluster: deleting a vMotion record: %w", err)
	}
	return nil
}

// LookupMigration reads a pending hand-over by the hash of a PEER payload.
// It returns ErrNoMigration when there is none. rev is the record's
// ModRevision, for TakeOverMigration.
func (n *Node) LookupMigration(ctx context.Context, hash string) (m *Migration, rev int64, err error) {
	n.op()
	r, err := n.cli.Get(ctx, n.key(kVMotion+hash))
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: looking up a vMotion: %w", err)
	}
	if len(r.Kvs) == 0 {
		return nil, 0, ErrNoMigration
	}
	v, err := decode[Migration](r.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return &v, r.Kvs[0].ModRevision, nil
}

// TakeOverMigration finishes a dead member's hand-over: in one
// transaction it checks that the record is unchanged and that nobody
// holds the port (the owner's lease expired, taking its ports/ key with
// it), claims the port for this member and deletes the record, so the
// PEER is single-use. ErrOwnerAlive: the owner still holds the port (the
// caller forwards the PEER to it instead); ErrNoMigration: someone else
// took it first.
func (n *Node) TakeOverMigration(ctx context.Context, hash string, m *Migration, rev int64) (*Claim, error) {
	if !n.Healthy() {
		return nil, ErrUnavailable
	}
	vk := n.key(kVMotion + hash)
	pk := n.key(kPorts + m.Port.path())
	rec := PortRecord{Member: n.cfg.Member, Port: m.Port, VMName: m.VMName, Direction: m.Direction, Since: time.Now()}
	val := mustJSON(rec)
	info := mustJSON(PortInfo{Port: m.Port, VMName: m.VMName, Direction: m.Direction, Member: n.cfg.Member, Attached: true, Seen: rec.Since})
	lease := n.Lease()
	n.op()
	r, err := n.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(vk), "=", rev), clientv3.Compare(clientv3.CreateRevision(pk), "=", 0)).
		Then(clientv3.OpPut(pk, val, clientv3.WithLease(lease)), clientv3.OpPut(n.key(kPortInfo+m.Port.path()), info), clientv3.OpDelete(vk)).
		Else(clientv3.OpGet(vk), clientv3.OpGet(pk)).Commit()
	if err != nil {
		return nil, fmt.Errorf("cluster: taking over a vMotion: %w", err)
	}
	if !r.Succeeded {
		if len(r.Responses[0].GetResponseRange().Kvs) == 0 {
			return nil, ErrNoMigration
		}
		return nil, ErrOwnerAlive
	}
	c := &Claim{n: n, key: pk, kind: "port", name: m.Port.String(), value: val, lost: make(chan struct{})}
	c.fence.Store(r.Header.Revision)
	n.hold(c)
	n.stats.takeovers.Add(1)
	n.stats.claims.Add(1)
	n.log.Info("took over a dead member's vMotion hand-over", "port", m.Port.String(), "from", m.Owner)
	return c, nil
}
