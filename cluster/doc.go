// Package cluster makes several bridges one: ownership of VM serial ports,
// devices and direction-server listener ports is kept in etcd, under one
// lease per member, so that any member can serve any VM connection and no
// device is ever held by two members at once. Consensus, leases and
// watches are etcd's; this package only lays out keys and transactions.
//
// # Keys and leases
//
// Each member holds one lease (TTL lease_ttl, 10 s by default) and
// publishes members/<id> under it. A port, a device and the leader key
// are claimed by a transaction ("create if absent") under the same lease,
// so a member that dies loses all of them in one revision. The fence of a
// claim is its key's CreateRevision. See keys.go for the layout.
//
// # Any member takes any connection
//
// A DO-PROXY or VMOTION-PEER that reaches a member other than the one
// holding the port (or the hand-over) is carried to that member over the
// member link, mutual TLS (forward.go): the receiving member hands the
// connection's state over and relays bytes; a member that does not answer
// is waited for until its lease ends (OwnerWait), then the port is claimed
// or the hand-over taken over here.
//
// # Fencing and lock delay (after Consul, Patroni, Kleppmann)
//
//	member A renews at t0            A's validity ends (own clock)   lease expires on etcd   B may open the device
//	     |------------------------------|-----------------------------|--------------------------|
//	     t0                          t0+TTL-margin                  ≥ t0+TTL                ≥ t0+TTL+lock_delay
//
// A member measures its lease from the moment it *sent* the renewal, on
// its own monotonic clock, and fences (closes its devices) margin before
// etcd could expire it. A claimant that finds a device whose last holder
// vanished without a clean release waits the lock delay before opening
// it. A member paused longer than that gap is caught by the device's own
// connection limit (NPort "Max connection = 1", ser2net max-connections).
//
// # etcd unavailable
//
// Sessions, devices and users carry on. New claims wait; vMotion hand-overs
// are refused (NOTNOW) because a survivor could not finish them. When the
// member's lease lapses on its clock it fences its devices, unless every
// other member confirms over the member link that etcd is down for it too
// (the failsafe: then nobody can claim). When etcd is back, the lease is
// renewed, or replaced and every claim made again; claims someone else
// took meanwhile are reported lost.
//
// # Pending vMotions
//
// A hand-over is published as vmotion/<SHA-256(seq‖secret)> with its own
// lease (the PEER timeout): the secret is never stored, so etcd's contents
// cannot forge a PEER, and the record outlives its owner, so a survivor
// can finish a dead owner's hand-over (TakeOverMigration).
package cluster
