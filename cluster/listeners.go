package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Console ports of [remote] port_range in etcd (keys.go):
//
//	listen/vm/<vm>/<svc>     "N": the serial port's console port
//	listen/port/<N>          "<vm>/<svc>": whose port N is
//	listen/seen/<vm>/<svc>   listenSeen: when the serial port last attached
//
// listen/vm and listen/port are written together in one transaction and
// keep the format of the members that wrote them first (a member of an
// older version reads them in a rolling upgrade); listen/seen is what
// reclaiming orders by. A port assigned by such a member has no seen
// record: it counts as seen longest ago.

// ErrNoListener: every port of the range is assigned to a serial port
// that is attached now.
var ErrNoListener = errors.New("cluster: every listener port of the range is assigned")

// listenSeen is the value of listen/seen/<vm>/<svc>.
type listenSeen struct {
	Port    int       `json:"port"`
	VM      string    `json:"vm"` // VC UUID (or "name:" + name)
	Service string    `json:"service"`
	VMName  string    `json:"vm_name,omitempty"`
	Seen    time.Time `json:"seen"` // last attach, to within seenResolution
}

// seenResolution bounds the writes of attaches: a serial port that
// attaches again updates its seen record only when the recorded time is
// older than this (1,000 VMs coming back after a failover must not cost
// 1,000 writes). The single bridge's state file keeps the same
// resolution (package remote).
const seenResolution = time.Hour

// AssignListener returns the direction-server listener port of a VM
// serial port, assigning the first free one in [lo, hi] the first time:
// the VM keeps its listener port whichever member serves it. When every
// port of the range is assigned, the port of the serial port seen
// longest ago that no member holds now (no ports/ claim) is reclaimed
// for p, in one transaction that fails if that serial port is claimed
// meanwhile or another member reclaims the same port first; reclaimed
// then describes it, for the log. vmName is for that description.
func (n *Node) AssignListener(ctx context.Context, p PortID, vmName string, lo, hi int) (port int, reclaimed string, err error) {
	vk := n.key(kListenVM + p.path())
	sk := n.key(kListenSeen + p.path())
	err = n.retry(ctx, "assigning a listener port to "+p.String(), func(ctx context.Context) error {
		now := time.Now().UTC()
		seen := func(port int) string {
			return mustJSON(listenSeen{Port: port, VM: p.VM, Service: p.Service, VMName: vmName, Seen: now})
		}
		// One snapshot of all three: a listing that sees every port taken
		// must also see this port's own assignment if it was made meanwhile.
		n.op()
		snap, err := n.cli.Txn(ctx).Then(clientv3.OpGet(vk), clientv3.OpGet(sk), clientv3.OpGet(n.key(kListenN), clientv3.WithPrefix(), clientv3.WithKeysOnly())).Commit()
		if err != nil {
			return err
		}
		if kvs := snap.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			if port, err = strconv.Atoi(string(kvs[0].Value)); err != nil {
				return fmt.Errorf("cluster: listener port of %s: %w", p, err)
			}
			var rec listenSeen
			if s := snap.Responses[1].GetResponseRange().Kvs; len(s) > 0 {
				rec, _ = decode[listenSeen](s[0].Value)
			}
			if rec.Port != port || now.Sub(rec.Seen) > seenResolution {
				// Best effort: the assignment itself is unchanged.
				n.op()
				if _, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(vk), "=", itoa(port))).Then(clientv3.OpPut(sk, seen(port))).Commit(); err != nil {
					n.log.Debug("recording when a serial port attached", "port", p.String(), "err", err)
				}
			}
			return nil
		}
		used := map[int]bool{}
		for _, kv := range snap.Responses[2].GetResponseRange().Kvs {
			if v, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), n.key(kListenN))); err == nil {
				used[v] = true
			}
		}
		if free := slices.DeleteFunc(seq(lo, hi), func(v int) bool { return used[v] }); len(free) > 0 {
			cand := free[0]
			pk := n.key(kListenN + itoa(cand))
			n.op()
			t, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(vk), "=", 0), clientv3.Compare(clientv3.CreateRevision(pk), "=", 0)).
				Then(clientv3.OpPut(vk, itoa(cand)), clientv3.OpPut(pk, p.path()), clientv3.OpPut(sk, seen(cand))).Commit()
			if err != nil {
				return err
			}
			if !t.Succeeded {
				return errRetry // lost a race: look again
			}
			port, reclaimed = cand, ""
			return nil
		}
		cand, err := n.reclaimCandidate(ctx, lo, hi)
		if err != nil {
			return err
		}
		pk := n.key(kListenN + itoa(cand.port))
		oldVK := n.key(kListenVM + cand.path)
		n.op()
		t, err := n.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(pk), "=", cand.rev),                  // nobody reclaimed it meanwhile
			clientv3.Compare(clientv3.CreateRevision(n.key(kPorts+cand.path)), "=", 0), // its serial port is still not held
			clientv3.Compare(clientv3.CreateRevision(vk), "=", 0),                      // p got no port meanwhile
		).Then(
			clientv3.OpPut(pk, p.path()), clientv3.OpPut(vk, itoa(cand.port)), clientv3.OpPut(sk, seen(cand.port)),
			clientv3.OpDelete(n.key(kListenSeen+cand.path)),
			clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(oldVK), "=", itoa(cand.port))}, []clientv3.Op{clientv3.OpDelete(oldVK)}, nil),
		).Commit()
		if err != nil {
			return err
		}
		if !t.Succeeded {
			return errRetry
		}
		n.stats.listenReclaims.Add(1)
		port = cand.port
		if cand.known {
			reclaimed = fmt.Sprintf("port %d reclaimed from VM %q (service URI %q), last seen %s", cand.port, cmp.Or(cand.seen.VMName, cand.seen.VM), cand.seen.Service, cand.seen.Seen.Format(time.RFC3339))
		} else {
			reclaimed = fmt.Sprintf("port %d reclaimed from VM serial port %s (assigned by an older member: last seen unknown)", cand.port, cand.path)
		}
		return nil
	})
	return port, reclaimed, err
}

// reclaimable is a console port whose serial port no member holds.
type reclaimable struct {
	port  int
	path  string // its serial port's "<vm>/<svc>"
	rev   int64  // listen/port/<port>'s ModRevision
	seen  listenSeen
	known bool // a seen record exists
}

// reclaimCandidate reads, in one snapshot, the range's assignments, when
// each serial port was last seen and which ports members hold, and
// returns the assignment seen longest ago whose serial port is not held
// (ties: the lowest port). ErrNoListener when there is none.
func (n *Node) reclaimCandidate(ctx context.Context, lo, hi int) (reclaimable, error) {
	n.op()
	r, err := n.cli.Txn(ctx).Then(
		clientv3.OpGet(n.key(kListenN), clientv3.WithPrefix()),
		clientv3.OpGet(n.key(kListenSeen), clientv3.WithPrefix()),
		clientv3.OpGet(n.key(kPorts), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return reclaimable{}, err
	}
	seen := map[string]listenSeen{}
	for _, kv := range r.Responses[1].GetResponseRange().Kvs {
		if s, err := decode[listenSeen](kv.Value); err == nil {
			seen[strings.TrimPrefix(string(kv.Key), n.key(kListenSeen))] = s
		}
	}
	held := map[string]bool{}
	for _, kv := range r.Responses[2].GetResponseRange().Kvs {
		held[strings.TrimPrefix(string(kv.Key), n.key(kPorts))] = true
	}
	var cands []reclaimable
	for _, kv := range r.Responses[0].GetResponseRange().Kvs {
		v, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), n.key(kListenN)))
		path := string(kv.Value)
		if err != nil || v < lo || v > hi || held[path] {
			continue
		}
		c := reclaimable{port: v, path: path, rev: kv.ModRevision}
		if s, ok := seen[path]; ok && s.Port == v {
			c.seen, c.known = s, true
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		return reclaimable{}, ErrNoListener
	}
	return slices.MinFunc(cands, func(a, b reclaimable) int {
		return cmp.Or(a.seen.Seen.Compare(b.seen.Seen), cmp.Compare(a.port, b.port))
	}), nil
}

func seq(lo, hi int) []int {
	var s []int
	for v := lo; v <= hi; v++ {
		s = append(s, v)
	}
	return s
}

// WatchListeners calls revoked for console ports that were taken from
// the serial port that had them (reclaimed for another one), until ctx
// or the node ends: still reports whether a serial port still has the
// port. A member serving the old serial port (one whose lease lapsed
// while etcd was cut off from it, and that went on serving it) must
// close its listener on the port. After a broken watch or a compaction
// it lists every assignment again and calls revoked for each, so that
// nothing missed meanwhile stays unseen.
func (n *Node) WatchListeners(ctx context.Context, revoked func(port int, still func(PortID) bool)) {
	prefix := n.key(kListenN)
	report := func(key, path string) {
		v, err := strconv.Atoi(strings.TrimPrefix(key, prefix))
		if err != nil {
			return
		}
		revoked(v, func(p PortID) bool { return p.path() == path })
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()
	var rev int64
	for ctx.Err() == nil {
		if rev == 0 {
			lctx, lcancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
			n.op()
			r, err := n.cli.Get(lctx, prefix, clientv3.WithPrefix())
			lcancel()
			if err != nil {
				select {
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
				continue
			}
			for _, kv := range r.Kvs {
				report(string(kv.Key), string(kv.Value))
			}
			rev = r.Header.Revision
		}
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range n.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV()) {
			if err := resp.Err(); err != nil {
				break
			}
			for _, ev := range resp.Events {
				rev = ev.Kv.ModRevision
				switch {
				case ev.Type == mvccpb.DELETE:
					report(string(ev.Kv.Key), "")
				case ev.PrevKv != nil && string(ev.PrevKv.Value) != string(ev.Kv.Value):
					report(string(ev.Kv.Key), string(ev.Kv.Value))
				}
			}
		}
		wcancel()
		rev = 0 // broken (no leader, lost connection, compacted): list again
	}
}

// ListenerAssigner assigns direction-server listener ports through etcd
// (the remote hub's PortAssigner): a VM serial port keeps its console
// port whichever member serves it, and no two get the same one. The
// listener itself is held by the member that holds the port's claim.
type ListenerAssigner struct{ Node *Node }

// AssignListener implements remote.PortAssigner.
func (a ListenerAssigner) AssignListener(ctx context.Context, key vspc.PortKey, vmName string, lo, hi int) (int, string, error) {
	return a.Node.AssignListener(ctx, PortID{VM: key.VM, Service: key.Service}, vmName, lo, hi)
}

// WatchRevoked calls drop for each console port reclaimed from a serial
// port (see Node.WatchListeners) until ctx or the node ends: still
// reports whether a serial port still has the port.
func (a ListenerAssigner) WatchRevoked(ctx context.Context, drop func(port int, still func(vspc.PortKey) bool)) {
	a.Node.WatchListeners(ctx, func(port int, still func(PortID) bool) {
		drop(port, func(k vspc.PortKey) bool { return still(PortID{VM: k.VM, Service: k.Service}) })
	})
}
