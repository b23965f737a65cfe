package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Bridger claims each VM serial port in etcd before Next opens it, and
// gives the claim back when the port goes away: a port is served by one
// member at a time. A port another live member holds is refused
// with an *OwnerError (which the vspc server's Forwarder carries there, or
// refuses with WONT-PROXY without one), and so is one that cannot be
// claimed within Wait (etcd unreachable); a VM that sent no identity is
// served locally unclaimed (nobody could reconnect to it anyway).
type Bridger struct {
	Node *Node
	Next vspc.Bridger
	Wait time.Duration // longest wait for a claim; default 3s
}

// PortIDOf is the cluster name of a VM serial port, as vspc keys it
// ("name:" + VM name when the VM sent no VC UUID); ok is false for a VM
// that sent neither.
func PortIDOf(req vspc.Request) (PortID, bool) {
	vm := req.VCUUID
	if vm == "" && req.VMName != "" {
		vm = "name:" + req.VMName
	}
	return PortID{VM: vm, Service: req.ServiceURI}, vm != ""
}

// Open implements vspc.Bridger.
func (b *Bridger) Open(ctx context.Context, req vspc.Request, vm vspc.Sink) (vspc.Backend, error) {
	id, ok := PortIDOf(req)
	if !ok {
		return b.Next.Open(ctx, req, vm)
	}
	wait := b.Wait
	if wait <= 0 {
		wait = 3 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, wait)
	claim, owner, err := b.Node.ClaimPort(cctx, PortRecord{Port: id, VMName: req.VMName, Direction: req.Direction.String()})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("cluster: cannot claim the port in etcd: %w", err)
	}
	if owner != nil {
		return nil, &OwnerError{Owner: *owner} // forwarded there when a Forwarder is configured
	}
	be, err := b.Next.Open(ctx, req, vm)
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), b.Node.cfg.CallTimeout)
		claim.Release(rctx)
		cancel()
		return nil, err
	}
	cb := &claimedBackend{Backend: be, claim: claim, n: b.Node, done: make(chan struct{})}
	b.Node.wg.Go(cb.watch)
	return cb, nil
}

// claimedBackend is a port's backend and its claim.
type claimedBackend struct {
	vspc.Backend
	claim  *Claim
	n      *Node
	once   sync.Once // Close
	beOnce sync.Once // the backend's Close: once, by Close or by a lost claim
	beErr  error
	done   chan struct{}
}

func (c *claimedBackend) closeBackend() error {
	c.beOnce.Do(func() { c.beErr = c.Backend.Close() })
	return c.beErr
}

// watch closes the backend if another member takes the port (after this
// member's lease was gone): the device and remote users move there.
func (c *claimedBackend) watch() {
	select {
	case <-c.claim.Lost():
		if !c.claimLost() {
			return // released by Close
		}
		c.n.log.Warn("port claim lost to another member: closing its device or console here", "port", c.claim.name)
		c.closeBackend()
	case <-c.done:
	case <-c.n.ctx.Done():
	}
}

// claimLost reports whether the claim ended by loss (not by Release).
func (c *claimedBackend) claimLost() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Close closes the backend and gives the port back.
func (c *claimedBackend) Close() error {
	var err error
	c.once.Do(func() {
		close(c.done)
		err = c.closeBackend()
		ctx, cancel := context.WithTimeout(context.Background(), c.n.cfg.CallTimeout)
		defer cancel()
		c.claim.Release(ctx)
	})
	return err
}
