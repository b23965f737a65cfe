package admin

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vspc-bridge/vspc-bridge/vspc"
)

const ns = "vspc_bridge"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

var (
	descConns       = desc("vm_connections", "Open telnet connections from ESXi hosts.")
	descParked      = desc("parked_connections", "Idle VM and device connections parked without a goroutine ([vspc] park_after).")
	descPorts       = desc("ports", "VM serial ports by state (attached, detached: waiting out the grace period, vmotion: hand-over in progress).", "state")
	descBytes       = desc("port_bytes_total", "Bytes carried for VM serial ports: to_vm (telnet-escaped, as written) and from_vm.", "direction")
	descQueued      = desc("queued_bytes", "Bytes waiting to be written to VMs, summed over ports (buffer occupancy).")
	descQueuedMax   = desc("queued_bytes_max", "Bytes waiting to be written to the fullest single VM port.")
	descBacklog     = desc("device_backlog_bytes", "Bytes from VMs waiting for their device to come back, summed over links.")
	descBacklogMax  = desc("device_backlog_bytes_max", "Bytes from a VM waiting for its device, on the fullest link.")
	descDevices     = desc("devices", "Device and remote-system links by state (up, connecting, down).", "state")
	descDevReconn   = desc("device_reconnects_total", "Times a device or remote system was connected again after its link's first connect.")
	descVMotions    = desc("vmotions_total", "vMotion hand-overs by outcome (completed, aborted, notnow, bad_secret, timed_out).", "outcome")
	descAccepted    = desc("connections_accepted_total", "Telnet connections accepted from ESXi hosts.")
	descRefused     = desc("connections_refused_total", "VM serial ports refused with WONT-PROXY (no route, connect_allow, direction, device in use).")
	descHandshake   = desc("handshake_failures_total", "ESXi connections that ended before the proxy handshake completed, by reason (timeout, protocol_error, connection_lost, bad_peer).", "reason")
	descVMReconn    = desc("vm_reconnects_total", "VM connections that re-attached to an existing port (after a drop or a bridge restart).")
	descAlerts      = desc("alerts_total", "Console alerts raised (after the per-VM rate limit), by rule.", "rule")
	descAlertSupp   = desc("alerts_suppressed_total", "Console alert matches dropped by the per-VM rate limit.")
	descAlertSkip   = desc("alert_skipped_chunks_total", "Chunks of console output not matched because the alert queue was full (forwarding is never slowed).")
	descAlertSkipB  = desc("alert_skipped_bytes_total", "Bytes of console output not matched because the alert queue was full.")
	descWebhook     = desc("alert_webhook_total", "Alert webhook POSTs by result (sent, failed, dropped: queue full).", "result")
	descReloads     = desc("config_reloads_total", "Config reloads by result (ok, rejected).", "result")
	descReloadTime  = desc("config_last_reload_timestamp_seconds", "Unix time of the last config reload attempt, 0 if none.")
	descCertExpiry  = desc("tls_cert_expiry_timestamp_seconds", "Unix time at which a listener's certificate expires.", "listener")
	descRLogins     = desc("remote_logins_total", "Remote-access login attempts by result (ok, failed: wrong password, unknown user or no accepted key; refused: rate-limited).", "result")
	descRDropped    = desc("remote_clients_dropped_total", "Remote-access clients dropped for being too slow (over client_queue in drop mode, or stalled for client_stall in pause mode).")
	descRSessions   = desc("remote_sessions", "Remote-access connections open now (front doors and per-VM listeners).")
	descRConsoles   = desc("remote_consoles", "Direction-server VM serial ports with a remote-access console.")
	descBuildInfo   = desc("build_info", "Always 1; the version label says which build runs.", "version")
	descStartTime   = desc("start_time_seconds", "Unix time the bridge started.")
	descCHealthy    = desc("cluster_etcd_healthy", "1 while etcd confirmed this member's lease at the last renewal.")
	descCValid      = desc("cluster_lease_valid", "1 while this member's lease is valid on its own clock (or the failsafe holds); 0: its devices are fenced.")
	descCLeader     = desc("cluster_leader", "1 on the member that leads (runs the reconnect sweep).")
	descCMembers    = desc("cluster_members", "Live cluster members.")
	descCOwned      = desc("cluster_owned", "Ports and devices each member holds, by member and kind (port, device).", "member", "kind")
	descCOrphans    = desc("cluster_orphan_ports", "Ports of dead members that nobody claimed since.")
	descCOps        = desc("cluster_etcd_ops_total", "etcd requests this member made.")
	descCEvents     = desc("cluster_events_total", "Cluster events on this member, by kind (claim, claim_conflict, release, lease_loss, fence, failsafe_hold, keepalive_failure, takeover, lock_delay, claim_lost, forwarded, handed_in, held, hold_failed).", "event")
	descCReconn     = desc("cluster_reconnects_total", "Ports of dead members: came_back (their VM returned by itself, counted where it returned), toggled (reconnected through vCenter by the leader), back (claimed again after a toggle), failed (the vCenter call failed).", "result")
	descCReconnSec  = desc("cluster_reconnect_seconds", "Time from a vCenter reconnect to the port being claimed again: the last one and the longest.", "which")
	allPortStates   = []string{"attached", "detached", "vmotion"}
	allDeviceStates = []string{"up", "connecting", "down"}
)

// Collector is a prometheus.Collector that reads the server, bridge and
// matcher snapshots at scrape time. Byte and reconnect counters are the
// sums over live ports and links plus what ports and links that are gone
// had at the last scrape that saw them, so they never go down (traffic of
// a port that opened and closed between two scrapes is not counted).
type Collector struct {
	cfg Config

	mu      sync.Mutex            // guards the fields below; serialises Collect
	lastP   map[tallyID]portTally // live ports at the last scrape
	lastD   map[tallyID]int       // device reconnects of live links at the last scrape
	goneTo  int64                 // bytes to VMs of ports gone since
	goneFr  int64
	goneDev int64
}

type portTally struct{ to, from int64 }

// tallyID follows one port, or one device link of a port, across scrapes.
type tallyID struct {
	port  vspc.PortKey
	which string // the port's start (Unix ns), or the link's device URI
}

// NewCollector returns the bridge collector for cfg (see Config).
func NewCollector(cfg Config) *Collector {
	return &Collector{cfg: cfg, lastP: map[tallyID]portTally{}, lastD: map[tallyID]int{}}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descParked, descPorts, descBytes, descQueued, descQueuedMax, descBacklog, descBacklogMax,
		descDevices, descDevReconn, descVMotions, descAccepted, descRefused, descHandshake, descVMReconn,
		descAlerts, descAlertSupp, descAlertSkip, descAlertSkipB, descWebhook, descReloads, descReloadTime, descCertExpiry,
		descRLogins, descRDropped, descRSessions, descRConsoles, descBuildInfo, descStartTime,
		descCHealthy, descCValid, descCLeader, descCMembers, descCOwned, descCOrphans, descCOps, descCEvents, descCReconn, descCReconnSec} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}

	srv := c.cfg.Server
	gauge(descConns, float64(srv.Sessions()))
	parked := 0
	if c.cfg.Parked != nil {
		parked = c.cfg.Parked()
	}
	gauge(descParked, float64(parked))
	states := map[string]int{}
	var queued, queuedMax int
	live := make(map[tallyID]portTally)
	var to, from int64
	for _, p := range srv.Ports() {
		if p.State == "closed" {
			continue
		}
		states[p.State]++
		queued += p.Queued
		queuedMax = max(queuedMax, p.Queued)
		id := tallyID{vspc.PortKeyOf(p.VCUUID, p.VMName, p.ServiceURI), strconv.FormatInt(p.Since.UnixNano(), 10)}
		live[id] = portTally{p.BytesToVM, p.BytesFromVM}
		to += p.BytesToVM
		from += p.BytesFromVM
	}
	for id, t := range c.lastP {
		if _, ok := live[id]; !ok {
			c.goneTo += t.to
			c.goneFr += t.from
		}
	}
	c.lastP = live
	for _, s := range allPortStates {
		gauge(descPorts, float64(states[s]), s)
	}
	counter(descBytes, float64(to+c.goneTo), "to_vm")
	counter(descBytes, float64(from+c.goneFr), "from_vm")
	gauge(descQueued, float64(queued))
	gauge(descQueuedMax, float64(queuedMax))

	if c.cfg.Devices != nil {
		dstates := map[string]int{}
		var backlog, backlogMax, reconn int
		liveD := make(map[tallyID]int)
		for _, d := range c.cfg.Devices() {
			dstates[d.State]++
			backlog += d.Backlog
			backlogMax = max(backlogMax, d.Backlog)
			// A device key is held by one link at a time; a new link for
			// it starts counting from zero again.
			id := tallyID{vspc.PortKeyOf(d.VCUUID, d.VMName, d.ServiceURI), d.Device}
			if n, ok := c.lastD[id]; ok && d.Reconnects() < n {
				c.goneDev += int64(n) // the same key, a new link
			}
			liveD[id] = d.Reconnects()
			reconn += d.Reconnects()
		}
		for id, n := range c.lastD {
			if _, ok := liveD[id]; !ok {
				c.goneDev += int64(n)
			}
		}
		c.lastD = liveD
		for _, s := range allDeviceStates {
			gauge(descDevices, float64(dstates[s]), s)
		}
		gauge(descBacklog, float64(backlog))
		gauge(descBacklogMax, float64(backlogMax))
		counter(descDevReconn, float64(int64(reconn)+c.goneDev))
	}

	k := srv.Counters()
	for _, o := range []struct {
		name string
		v    int64
	}{{"completed", k.VMotionsCompleted}, {"aborted", k.VMotionsAborted}, {"notnow", k.VMotionsNotNow}, {"bad_secret", k.VMotionsBadSecret}, {"timed_out", k.VMotionsTimedOut}} {
		counter(descVMotions, float64(o.v), o.name)
	}
	counter(descAccepted, float64(k.Accepted))
	counter(descRefused, float64(k.Refused))
	for _, r := range []struct {
		name string
		v    int64
	}{{"timeout", k.HandshakeTimeouts}, {"protocol_error", k.HandshakeErrors}, {"connection_lost", k.HandshakeLost}, {"bad_peer", k.HandshakeBadPeer}} {
		counter(descHandshake, float64(r.v), r.name)
	}
	counter(descVMReconn, float64(k.Reconnects))

	if c.cfg.Alerts != nil {
		st := c.cfg.Alerts()
		for rule, n := range st.Alerts {
			counter(descAlerts, float64(n), rule)
		}
		counter(descAlertSupp, float64(st.Suppressed))
		counter(descAlertSkip, float64(st.Skipped))
		counter(descAlertSkipB, float64(st.SkippedBytes))
		counter(descWebhook, float64(st.WebhookSent), "sent")
		counter(descWebhook, float64(st.WebhookFailed), "failed")
		counter(descWebhook, float64(st.WebhookDropped), "dropped")
	}

	if rc := c.remote(); rc != nil {
		counter(descRLogins, float64(rc.Logins), "ok")
		counter(descRLogins, float64(rc.LoginFailures), "failed")
		counter(descRLogins, float64(rc.LoginsRefused), "refused")
		counter(descRDropped, float64(rc.ClientsDropped))
		gauge(descRSessions, float64(rc.Sessions))
		gauge(descRConsoles, float64(rc.Consoles))
	}

	if c.cfg.Status != nil {
		st := c.cfg.Status()
		counter(descReloads, float64(st.Reloads.OK), "ok")
		counter(descReloads, float64(st.Reloads.Rejected), "rejected")
		gauge(descReloadTime, unixSeconds(st.Reloads.Last))
		for _, l := range st.Listeners {
			if !l.CertNotAfter.IsZero() {
				gauge(descCertExpiry, unixSeconds(l.CertNotAfter), l.Kind)
			}
		}
		gauge(descBuildInfo, 1, st.Version)
		gauge(descStartTime, unixSeconds(st.Started))
		if cl := st.Cluster; cl != nil {
			collectCluster(cl, gauge, counter)
		}
	}
}

func collectCluster(cl *ClusterStatus, gauge, counter func(d *prometheus.Desc, v float64, labels ...string)) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	gauge(descCHealthy, b(cl.Healthy))
	gauge(descCValid, b(cl.Valid))
	gauge(descCLeader, b(cl.IsLeader))
	gauge(descCMembers, float64(len(cl.Members)))
	for _, m := range cl.Members {
		gauge(descCOwned, float64(m.Ports), m.ID, "port")
		gauge(descCOwned, float64(m.Devices), m.ID, "device")
	}
	gauge(descCOrphans, float64(cl.Orphans))
	k := cl.Counters
	counter(descCOps, float64(k.Ops))
	for _, e := range []struct {
		name string
		v    int64
	}{{"claim", k.Claims}, {"claim_conflict", k.ClaimConflicts}, {"release", k.Releases}, {"lease_loss", k.LeaseLosses}, {"fence", k.Fences},
		{"failsafe_hold", k.FailsafeHolds}, {"keepalive_failure", k.KeepaliveFailures}, {"takeover", k.Takeovers}, {"lock_delay", k.LockDelays}, {"claim_lost", k.ClaimsLost},
		{"forwarded", k.Forwarded}, {"handed_in", k.HandedIn}, {"held", k.Held}, {"hold_failed", k.HoldFailed}, {"listen_reclaim", k.ListenReclaims}} {
		counter(descCEvents, float64(e.v), e.name)
	}
	counter(descCReconn, float64(k.CameBack), "came_back")
	counter(descCReconn, float64(k.Toggled), "toggled")
	counter(descCReconn, float64(k.Reconnected), "back")
	counter(descCReconn, float64(k.ReconnectFailed), "failed")
	gauge(descCReconnSec, k.LastReconnectSeconds, "last")
	gauge(descCReconnSec, k.MaxReconnectSeconds, "max")
}

func (c *Collector) remote() *RemoteCounters {
	if c.cfg.Remote == nil {
		return nil
	}
	return c.cfg.Remote()
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
