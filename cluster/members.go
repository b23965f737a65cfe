package cluster

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// listMembers reads members/ and returns the revision to watch from.
func (n *Node) listMembers(ctx context.Context) error {
	_, err := n.relist(ctx)
	return err
}

func (n *Node) relist(ctx context.Context) (int64, error) {
	n.op()
	r, err := n.cli.Get(ctx, n.key(kMembers), clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	m := map[string]MemberInfo{}
	for _, kv := range r.Kvs {
		if info, err := decode[MemberInfo](kv.Value); err == nil {
			m[strings.TrimPrefix(string(kv.Key), n.key(kMembers))] = info
		}
	}
	n.mu.Lock()
	old := n.members
	n.members = m
	watchers := slices.Clone(n.watchers)
	n.mu.Unlock()
	for id := range m {
		if _, ok := old[id]; !ok {
			for _, w := range watchers {
				w(id, true)
			}
		}
	}
	for id := range old {
		if _, ok := m[id]; !ok {
			for _, w := range watchers {
				w(id, false)
			}
		}
	}
	return r.Header.Revision, nil
}

// watchMembers keeps the member list current: list, then watch from the
// next revision; after a compaction or a broken watch, list again.
// Decisions that matter are made by transactions, never by this cache.
func (n *Node) watchMembers() {
	var rev int64
	for n.ctx.Err() == nil {
		if rev == 0 {
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.LeaseTTL)
			r, err := n.relist(ctx)
			cancel()
			if err != nil {
				select {
				case <-n.ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
				continue
			}
			rev = r
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(n.ctx))
		ch := n.cli.Watch(wctx, n.key(kMembers), clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
		for resp := range ch {
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					rev = 0
				}
				break
			}
			for _, ev := range resp.Events {
				id := strings.TrimPrefix(string(ev.Kv.Key), n.key(kMembers))
				up := ev.Type == mvccpb.PUT
				n.mu.Lock()
				_, had := n.members[id]
				if up {
					if info, err := decode[MemberInfo](ev.Kv.Value); err == nil {
						n.members[id] = info
					}
				} else {
					delete(n.members, id)
				}
				watchers := slices.Clone(n.watchers)
				n.mu.Unlock()
				if had != up {
					for _, w := range watchers {
						w(id, up)
					}
				}
				rev = ev.Kv.ModRevision
			}
		}
		cancel()
		if n.ctx.Err() != nil {
			return
		}
		// The watch broke (no leader, connection lost): list again once
		// etcd answers, so that nothing missed meanwhile stays unseen.
		rev = 0
	}
}

// Members returns the live members (this one included), sorted by id.
func (n *Node) Members() []MemberInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := slices.Collect(maps.Values(n.members))
	slices.SortFunc(out, func(a, b MemberInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// MemberByID returns a live member's record.
func (n *Node) MemberByID(id string) (MemberInfo, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.members[id]
	return m, ok
}

// OnMembership registers f, called (on the watch goroutine) when a member
// joins (up) or leaves (its lease ended or it left).
func (n *Node) OnMembership(f func(id string, up bool)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.watchers = append(n.watchers, f)
}
