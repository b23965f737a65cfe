package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// HandOvers shares a member's vMotion hand-overs through etcd
// (vspc.HandOvers): each is published as vmotion/<SHA-256(seq‖secret)>
// with its own lease (PeerTimeout), so that when the member dies, the
// member the destination host's VMOTION-PEER reaches can finish it.
// While etcd is unreachable BEGIN gets NOTNOW (the VM stays where it is),
// unless WithoutEtcd (a VIP, where the destination reaches this member).
type HandOvers struct {
	Node        *Node
	PeerTimeout time.Duration // the record's TTL: [vmotion] peer_timeout
	WithoutEtcd bool          // [cluster] vmotion_without_etcd
	// Forwarder carries a PEER to the member that holds its hand-over;
	// nil: a PEER is only ever taken over (from a member that is gone).
	Forwarder *Forwarder
}

// Begin publishes the hand-over before GOAHEAD.
func (h *HandOvers) Begin(key vspc.PortKey, req vspc.Request, payload []byte, seqLen int) error {
	if !h.Node.Healthy() {
		if h.WithoutEtcd {
			return nil
		}
		return fmt.Errorf("cluster: etcd unreachable, no other bridge could finish this hand-over: the VM stays where it is")
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.Node.cfg.CallTimeout)
	defer cancel()
	m := Migration{Port: PortID{VM: key.VM, Service: key.Service}, SeqLen: seqLen, VMName: req.VMName, Direction: req.Direction.String()}
	if o, err := h.Node.PortOwner(ctx, m.Port); err == nil && o != nil {
		m.Fence = o.Fence
	}
	if err := h.Node.PublishMigration(ctx, PeerHash(payload), m, h.PeerTimeout); err != nil {
		if h.WithoutEtcd {
			return nil
		}
		return err
	}
	return nil
}

// End deletes the record of a hand-over that ended.
func (h *HandOvers) End(key vspc.PortKey, payload []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), h.Node.cfg.CallTimeout)
	defer cancel()
	if err := h.Node.DeleteMigration(ctx, PeerHash(payload)); err != nil {
		h.Node.log.Debug("deleting a vMotion record (it expires anyway)", "err", err)
	}
}

// TakeOver implements vspc.HandOvers: the PEER goes to the member that
// holds the hand-over, over the member link, or, when that member is
// gone, this member takes the hand-over over (Forwarder.TakeOver).
func (h *HandOvers) TakeOver(ctx context.Context, ho *vspc.Handoff) (vspc.PeerResult, error) {
	f := h.Forwarder
	if f == nil {
		f = &Forwarder{Node: h.Node}
	}
	return f.TakeOver(ctx, ho)
}
