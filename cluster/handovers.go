package cluster

import (
	"context"
	"fmt"
	"strings"
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

// TakeOver finishes the hand-over of a member that is gone: the PEER's
// hash names a record, the port is free (its owner's lease ended), and
// one transaction claims it here and consumes the record.
func (h *HandOvers) TakeOver(payload []byte) (vspc.Request, int, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.Node.cfg.CallTimeout)
	defer cancel()
	hash := PeerHash(payload)
	m, rev, err := h.Node.LookupMigration(ctx, hash)
	if err != nil {
		return vspc.Request{}, 0, false
	}
	if _, err := h.Node.TakeOverMigration(ctx, hash, m, rev); err != nil {
		h.Node.log.Warn("VMOTION-PEER for another member's hand-over not taken over", "owner", m.Owner, "port", m.Port.String(), "err", err)
		return vspc.Request{}, 0, false
	}
	req := vspc.Request{ServiceURI: m.Port.Service, VMName: m.VMName, Direction: vspc.DirClient}
	if m.Direction == vspc.DirServer.String() {
		req.Direction = vspc.DirServer
	}
	if !strings.HasPrefix(m.Port.VM, "name:") {
		req.VCUUID = m.Port.VM
	}
	return req, m.SeqLen, true
}
