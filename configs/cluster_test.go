package configs

import (
	"strings"
	"testing"
	"time"
)

func TestClusterAbsentIsSingleNode(t *testing.T) {
	c, err := Parse("min.toml", []byte("[vspc]\nlisten = \"127.0.0.1:13370\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Enabled() {
		t.Error("a config without [cluster] enables the cluster")
	}
	if got := c.Cluster.String(); got != "single node" {
		t.Errorf("String = %q", got)
	}
}

const clusterOK = `[vspc]
listen = "127.0.0.1:13370"
[cluster]
name = "lab"
member = "m1"
endpoints = ["http://127.0.0.1:2379"]
link_listen = "127.0.0.1:13390"
link_ca = "ca.crt"
link_cert = "m1.crt"
link_key = "m1.key"
`

func TestClusterDefaults(t *testing.T) {
	c, err := Parse("c.toml", []byte(clusterOK))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if !cl.Enabled() || cl.Prefix != "/vspc/v1/" || cl.LeaseTTL.Duration != 10*time.Second || cl.ValidityMargin.Duration != 2*time.Second ||
		cl.LockDelay.Duration != 5*time.Second || cl.EtcdTimeout.Duration != time.Second || cl.ReconnectGrace.Duration != 30*time.Second ||
		cl.ReconnectRate != 10 || cl.VMotionWithoutEtcd || cl.LinkAddr() != "127.0.0.1:13390" || cl.OwnerWait.Duration != 12*time.Second {
		t.Errorf("defaults: %+v", cl)
	}
	// owner_wait follows lease_ttl unless set.
	c, err = Parse("c.toml", []byte(clusterOK+"lease_ttl = \"4s\"\nvalidity_margin = \"1s\"\n"))
	if err != nil || c.Cluster.OwnerWait.Duration != 6*time.Second {
		t.Errorf("owner_wait with lease_ttl 4s: %v %v", c.Cluster.OwnerWait, err)
	}
	c, err = Parse("c.toml", []byte(clusterOK+"owner_wait = \"0s\"\n"))
	if err != nil || c.Cluster.OwnerWait.Duration != 0 {
		t.Errorf("owner_wait 0s: %v %v", c.Cluster.OwnerWait, err)
	}
}

func TestClusterErrors(t *testing.T) {
	for _, tt := range []struct {
		name, src string
		want      []string // substrings, each in its own error
	}{
		{"empty table", "[vspc]\nlisten = \"127.0.0.1:13370\"\n[cluster]\n", []string{
			"3: cluster.endpoints: required", "3: cluster.link_ca: required", "3: cluster.link_cert: required",
			"3: cluster.link_key: required", "3: cluster.link_listen: required", "3: cluster.member: required", "3: cluster.name: required"}},
		{"bad ids", strings.Replace(strings.Replace(clusterOK, `"lab"`, `"a b"`, 1), `"m1"`, `"-x"`, 1),
			[]string{`4: cluster.name: "a b": want`, `5: cluster.member: "-x": want`}},
		{"bad endpoint", strings.Replace(clusterOK, `"http://127.0.0.1:2379"`, `"127.0.0.1:2379", "https://h:1/x"`, 1),
			[]string{`6: cluster.endpoints[0]: "127.0.0.1:2379": want http://host:port`, `6: cluster.endpoints[1]: "https://h:1/x": want http(s)://host:port with no path`}},
		{"tls without https", clusterOK + "etcd_ca = \"ca.crt\"\netcd_cert = \"c\"\n", []string{
			"3: cluster.etcd_key: etcd_cert and etcd_key go together", "11: cluster.etcd_ca: etcd client TLS is set but no endpoint is https://"}},
		{"https with tls", strings.Replace(clusterOK, "http://", "https://", 1) + "etcd_ca = \"ca.crt\"\netcd_cert = \"c\"\netcd_key = \"k\"\n", nil},
		{"link clash and wildcard", strings.Replace(clusterOK, `"127.0.0.1:13390"`, `":13370"`, 1), []string{
			"7: cluster.link_listen: :13370 clashes with vspc.listen 127.0.0.1:13370",
			`7: cluster.link_listen: ":13370" is not an address other members can dial`}},
		{"wildcard with advertise", strings.Replace(clusterOK, `"127.0.0.1:13390"`, `":13390"`, 1) + "link_advertise = \"10.0.0.1:13390\"\n", nil},
		{"timers", clusterOK + "lease_ttl = \"1s\"\nvalidity_margin = \"0s\"\nlock_delay = \"2m\"\netcd_timeout = \"4s\"\nreconnect_grace = \"-1s\"\nreconnect_rate = 0\nprefix = \"vspc\"\n", []string{
			"11: cluster.lease_ttl: 1s is out of range 2s..5m", "12: cluster.validity_margin: must be positive", "13: cluster.lock_delay: 2m0s is out of range",
			"14: cluster.etcd_timeout: 4s must be below vmotion.flush_timeout 3s", "15: cluster.reconnect_grace: must not be negative",
			"16: cluster.reconnect_rate: 0 is out of range 1..1000", `17: cluster.prefix: "vspc": want a key prefix`}},
		{"owner_wait", clusterOK + "owner_wait = \"6m\"\n", []string{"11: cluster.owner_wait: 6m0s is out of range 0s..5m"}},
		{"margin over half", clusterOK + "lease_ttl = \"4s\"\nvalidity_margin = \"3s\"\n", []string{"12: cluster.validity_margin: 3s is more than half of lease_ttl 4s"}},
		{"unknown key", clusterOK + "ttl = \"1s\"\n", []string{"11: cluster.ttl: unknown key (valid in [cluster]: name, member, endpoints"}},
	} {
		t.Run(tt.name, func(t *testing.T) { wantErrors(t, tt.src, tt.want) })
	}
}

// example.toml documents every [cluster] key (commented out: the table's
// presence turns the cluster on).
func TestExampleDocumentsClusterKeys(t *testing.T) {
	ex := string(ExampleTOML())
	for _, k := range tableKeys(typeOf(Cluster{})) {
		if !strings.Contains(ex, "\n# "+k+" = ") {
			t.Errorf("example.toml does not document cluster.%s", k)
		}
	}
}
