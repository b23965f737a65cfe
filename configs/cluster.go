package configs

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Cluster is the [cluster] table: several bridges as one, with their
// shared state in etcd (package cluster). Without the table the bridge is
// a single node and uses no etcd at all.
type Cluster struct {
	// Name is the cluster's name, in every member certificate's URI SAN
	// (vspc://NAME/member/ID). Required.
	Name string `toml:"name"`
	// Member is this bridge's member id, unique in the cluster. Required.
	Member string `toml:"member"`
	// Endpoints are the etcd client URLs (http:// or https://). Required.
	Endpoints []string `toml:"endpoints"`
	// EtcdCA, EtcdCert and EtcdKey are PEM files for etcd client TLS: the
	// CA that signed the etcd servers' certificates, and this member's
	// client certificate (when etcd requires client certificates).
	EtcdCA   string `toml:"etcd_ca"`
	EtcdCert string `toml:"etcd_cert"`
	EtcdKey  string `toml:"etcd_key"`
	// Prefix is where the bridge keeps its keys. Default "/vspc/v1/".
	Prefix string `toml:"prefix"`
	// LinkListen is the host:port of the member link (mutual TLS), where
	// other members forward VM connections to the owner. Required.
	LinkListen string `toml:"link_listen"`
	// LinkAdvertise is the address other members dial; default LinkListen
	// (which then needs a specific host and port).
	LinkAdvertise string `toml:"link_advertise"`
	// LinkCA, LinkCert and LinkKey are PEM files: the cluster CA and this
	// member's certificate (vspc-bridge cluster init). Required.
	LinkCA   string `toml:"link_ca"`
	LinkCert string `toml:"link_cert"`
	LinkKey  string `toml:"link_key"`
	// LeaseTTL is the member lease's TTL: a dead member's ports and
	// devices are free this long after its last renewal. 2s..5m, default
	// 10s.
	LeaseTTL Duration `toml:"lease_ttl"`
	// ValidityMargin: a member treats its lease as lapsed this long before
	// the TTL ends on its own clock, and fences its devices. Positive and
	// at most half of lease_ttl; default 2s.
	ValidityMargin Duration `toml:"validity_margin"`
	// LockDelay is how long a member waits before opening a device whose
	// last holder vanished without releasing it. 0s..60s, default 5s.
	LockDelay Duration `toml:"lock_delay"`
	// EtcdTimeout bounds one etcd call on the vMotion BEGIN path (VM stun
	// time). Positive and below vmotion.flush_timeout; default 1s.
	EtcdTimeout Duration `toml:"etcd_timeout"`
	// ReconnectGrace is how long after a member's death the leader waits
	// for its VMs to reconnect by themselves before reconnecting their
	// serial ports through vCenter. "0s" turns the reconnect off. Default
	// 30s.
	ReconnectGrace Duration `toml:"reconnect_grace"`
	// ReconnectRate bounds the vCenter reconfigure tasks per second.
	// 1..1000, default 10.
	ReconnectRate int `toml:"reconnect_rate"`
	// VMotionWithoutEtcd lets vMotion proceed while etcd is unreachable
	// (only safe with a VIP, where the destination always reaches the
	// same member). Default false: BEGIN gets NOTNOW.
	VMotionWithoutEtcd bool `toml:"vmotion_without_etcd"`
	// OwnerWait: a VM connection (DO-PROXY or VMOTION-PEER) whose port's
	// owner does not answer over the member link is held this long, until
	// the owner answers or its lease ends (then this member claims the
	// port or takes the hand-over over). 0s..5m; "0s" does not hold.
	// Default lease_ttl + 2s, so that a dead owner's lease ends within it.
	OwnerWait Duration `toml:"owner_wait"`
}

// Enabled reports whether the file has a [cluster] table (c is not nil).
func (c *Cluster) Enabled() bool { return c != nil }

// LinkAddr is the address other members dial for the member link.
func (c *Cluster) LinkAddr() string {
	if c.LinkAdvertise != "" {
		return c.LinkAdvertise
	}
	return c.LinkListen
}

func clusterDefaults() Cluster {
	return Cluster{
		Prefix:         "/vspc/v1/",
		LeaseTTL:       Duration{10 * time.Second},
		ValidityMargin: Duration{2 * time.Second},
		LockDelay:      Duration{5 * time.Second},
		EtcdTimeout:    Duration{time.Second},
		ReconnectGrace: Duration{30 * time.Second},
		ReconnectRate:  10,
	}
}

// clusterID is the grammar of member and cluster names (they go into etcd
// keys, certificate URIs and file names); cluster.CheckID agrees.
var clusterID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (d *decoder) validateCluster(c *Config) {
	cl := c.Cluster
	if cl == nil || d.bad["cluster"] {
		c.Cluster = nil
		return
	}
	// Defaults apply to what the table leaves out.
	def := clusterDefaults()
	for key, f := range map[string]func(){
		"prefix":          func() { cl.Prefix = def.Prefix },
		"lease_ttl":       func() { cl.LeaseTTL = def.LeaseTTL },
		"validity_margin": func() { cl.ValidityMargin = def.ValidityMargin },
		"lock_delay":      func() { cl.LockDelay = def.LockDelay },
		"etcd_timeout":    func() { cl.EtcdTimeout = def.EtcdTimeout },
		"reconnect_grace": func() { cl.ReconnectGrace = def.ReconnectGrace },
		"reconnect_rate":  func() { cl.ReconnectRate = def.ReconnectRate },
	} {
		if !d.set["cluster."+key] {
			f()
		}
	}
	if !d.set["cluster.owner_wait"] {
		cl.OwnerWait = Duration{cl.LeaseTTL.Duration + 2*time.Second} // after lease_ttl's default
	}
	for _, k := range []struct{ key, v, what string }{
		{"cluster.name", cl.Name, `the cluster's name, such as "lab" (in every member certificate)`},
		{"cluster.member", cl.Member, `this bridge's member id, such as "bridge-1"`},
	} {
		switch {
		case d.bad[k.key]:
		case k.v == "":
			d.errorf(k.key, "required: %s", k.what)
		case !clusterID.MatchString(k.v):
			d.errorf(k.key, "%q: want 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", k.v)
		}
	}
	if len(cl.Endpoints) == 0 && !d.bad["cluster.endpoints"] {
		d.errorf("cluster.endpoints", `required: etcd client URLs, such as ["https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"]`)
	}
	tlsEndpoint := false
	for i, ep := range cl.Endpoints {
		key := indexKey("cluster.endpoints", i)
		if d.bad[key] {
			continue
		}
		u, err := url.Parse(ep)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "":
			d.errorf(key, "%q: want http://host:port or https://host:port", ep)
		case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil:
			d.errorf(key, "%q: want http(s)://host:port with no path, query or user", ep)
		default:
			tlsEndpoint = tlsEndpoint || u.Scheme == "https"
		}
	}
	if (cl.EtcdCert == "") != (cl.EtcdKey == "") {
		key := "cluster.etcd_key"
		if cl.EtcdCert == "" {
			key = "cluster.etcd_cert"
		}
		d.errorf(key, "etcd_cert and etcd_key go together")
	}
	if !tlsEndpoint && (cl.EtcdCA != "" || cl.EtcdCert != "") {
		key := "cluster.etcd_ca"
		if cl.EtcdCA == "" {
			key = "cluster.etcd_cert"
		}
		d.errorf(key, "etcd client TLS is set but no endpoint is https://")
	}
	if !strings.HasPrefix(cl.Prefix, "/") || !strings.HasSuffix(cl.Prefix, "/") || len(cl.Prefix) < 2 {
		d.errorf("cluster.prefix", `%q: want a key prefix that starts and ends with "/", such as "/vspc/v1/"`, cl.Prefix)
	}
	switch {
	case d.bad["cluster.link_listen"]:
	case cl.LinkListen == "":
		d.errorf("cluster.link_listen", `required: host:port of the member link, such as "10.0.0.11:13390"`)
	default:
		if err := checkListen(cl.LinkListen); err != nil {
			d.fail("cluster.link_listen", err)
		} else {
			for _, o := range []struct{ key, addr string }{{"vspc.listen", c.VSPC.Listen}, {"vspc.tls_listen", c.VSPC.TLSListen}, {"admin.listen", c.Admin.Listen}, {"web.listen", c.Web.Listen}} {
				if listenersClash(cl.LinkListen, o.addr) {
					d.errorf("cluster.link_listen", "%s clashes with %s %s: give the member link its own port", cl.LinkListen, o.key, o.addr)
				}
			}
		}
	}
	adv, advKey := cl.LinkAdvertise, "cluster.link_advertise"
	if adv == "" {
		adv, advKey = cl.LinkListen, "cluster.link_listen"
	}
	if adv != "" && !d.bad[advKey] {
		host, port, err := net.SplitHostPort(adv)
		switch {
		case err != nil:
			if advKey == "cluster.link_advertise" {
				d.errorf(advKey, "%q: want host:port", adv)
			}
		case host == "" || host == "0.0.0.0" || host == "::" || port == "0":
			d.errorf(advKey, "%q is not an address other members can dial: set link_advertise to this member's host:port", adv)
		}
	}
	for _, k := range []struct{ key, v string }{{"cluster.link_ca", cl.LinkCA}, {"cluster.link_cert", cl.LinkCert}, {"cluster.link_key", cl.LinkKey}} {
		if k.v == "" && !d.bad[k.key] {
			d.errorf(k.key, "required: PEM file from `vspc-bridge cluster init` (the member link is mutual TLS)")
		}
	}
	if cl.LeaseTTL.Duration < 2*time.Second || cl.LeaseTTL.Duration > 5*time.Minute {
		d.errorf("cluster.lease_ttl", "%v is out of range 2s..5m", cl.LeaseTTL.Duration)
	}
	d.positive("cluster.validity_margin", cl.ValidityMargin)
	if cl.ValidityMargin.Duration > cl.LeaseTTL.Duration/2 {
		d.errorf("cluster.validity_margin", "%v is more than half of lease_ttl %v", cl.ValidityMargin.Duration, cl.LeaseTTL.Duration)
	}
	if cl.LockDelay.Duration < 0 || cl.LockDelay.Duration > time.Minute {
		d.errorf("cluster.lock_delay", "%v is out of range 0s..60s", cl.LockDelay.Duration)
	}
	d.positive("cluster.etcd_timeout", cl.EtcdTimeout)
	if ft := c.VMotion.FlushTimeout.Duration; ft > 0 && cl.EtcdTimeout.Duration >= ft {
		d.errorf("cluster.etcd_timeout", "%v must be below vmotion.flush_timeout %v (it is spent between VMOTION-BEGIN and GOAHEAD)", cl.EtcdTimeout.Duration, ft)
	}
	d.nonNegative("cluster.reconnect_grace", cl.ReconnectGrace)
	if cl.ReconnectRate < 1 || cl.ReconnectRate > 1000 {
		d.errorf("cluster.reconnect_rate", "%d is out of range 1..1000", cl.ReconnectRate)
	}
	if cl.OwnerWait.Duration < 0 || cl.OwnerWait.Duration > 5*time.Minute {
		d.errorf("cluster.owner_wait", "%v is out of range 0s..5m", cl.OwnerWait.Duration)
	}
}

// String summarises the cluster settings for check-config.
func (c *Cluster) String() string {
	if c == nil {
		return "single node"
	}
	return fmt.Sprintf("cluster %s member %s, etcd %s, link %s", c.Name, c.Member, strings.Join(c.Endpoints, ","), c.LinkAddr())
}
