package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vspc-bridge/vspc-bridge/cluster"
	"github.com/vspc-bridge/vspc-bridge/cluster/embedetcd"
)

// cmdEtcd runs one embedded etcd member until ctx ends (SIGINT, SIGTERM):
// for small sites that have no etcd of their own, and for the tests.
func cmdEtcd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c embedetcd.Config
	fs.StringVar(&c.Name, "name", "", "member name, unique in the etcd cluster (required)")
	fs.StringVar(&c.Dir, "data-dir", "", "data directory (required)")
	fs.StringVar(&c.ClientURL, "listen-client", "http://127.0.0.1:2379", "client URL: listened on and advertised (https:// with -cert)")
	fs.StringVar(&c.PeerURL, "listen-peer", "http://127.0.0.1:2380", "peer URL: listened on and advertised (https:// with -cert)")
	fs.StringVar(&c.InitialCluster, "initial-cluster", "", "every member's peer URL: NAME=URL,NAME=URL,... (default: this member alone)")
	fs.StringVar(&c.Token, "token", "vspc-bridge", "initial cluster token: members of other clusters cannot join")
	fs.BoolVar(&c.Existing, "existing", false, "join an existing cluster (after 'etcdctl member add') instead of forming a new one")
	cert := fs.String("cert", "", "PEM certificate for the client and peer listeners (vspc-bridge cluster init makes one)")
	key := fs.String("key", "", "PEM key of -cert")
	ca := fs.String("ca", "", "CA that clients and peers must present certificates from (mutual TLS)")
	level := fs.String("log-level", "warn", "etcd's log level: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge etcd -name NAME -data-dir DIR [-listen-client URL] [-listen-peer URL] [-initial-cluster N=URL,...] [-token T] [-existing] [-cert F -key F -ca F] [-log-level L]\n\nRuns one etcd member in this process, for [cluster] endpoints. Three of them (on three hosts) tolerate the loss of one.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 || c.Name == "" || c.Dir == "" || (*cert == "") != (*key == "") {
		fs.Usage()
		return errUsage
	}
	if c.InitialCluster == "" {
		c.InitialCluster = c.Name + "=" + c.PeerURL
	}
	c.CertFile, c.KeyFile, c.ClientCA = *cert, *key, *ca
	c.PeerCertFile, c.PeerKeyFile, c.PeerCA = *cert, *key, *ca
	var lv zapcore.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("-log-level %q: %w", *level, err)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lv)
	zc.OutputPaths, zc.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	lg, err := zc.Build()
	if err != nil {
		return err
	}
	defer lg.Sync()
	c.Logger = lg
	m, err := embedetcd.Start(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "etcd member %s ready: clients %s, peers %s\n", c.Name, c.ClientURL, c.PeerURL)
	select {
	case <-ctx.Done():
	case err = <-m.Err():
	}
	m.Close()
	return err
}

// cmdCluster runs the cluster subcommands.
func cmdCluster(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "init" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprint(stdout, clusterUsage)
			return flag.ErrHelp
		}
		fmt.Fprint(stderr, clusterUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("cluster init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o cluster.CertOptions
	fs.StringVar(&o.Cluster, "cluster", "", "the cluster's name ([cluster] name; required)")
	members := fs.String("members", "", "member ids, comma-separated ([cluster] member; required)")
	hosts := fs.String("hosts", "", "DNS names and IP addresses put in every member certificate, comma-separated (for etcd's TLS listeners)")
	fs.StringVar(&o.Dir, "dir", ".", "directory for ca.crt, ca.key and ID.crt, ID.key per member")
	fs.IntVar(&o.Days, "days", 3650, "validity in days")
	fs.BoolVar(&o.Force, "force", false, "overwrite existing member files (the CA is always kept)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), clusterUsage+"\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	}
	o.Members, o.Hosts = split(*members), split(*hosts)
	if fs.NArg() > 0 || o.Cluster == "" || len(o.Members) == 0 || o.Days < 1 {
		fs.Usage()
		return errUsage
	}
	files, err := cluster.InitCerts(o)
	for _, f := range files {
		fmt.Fprintln(stdout, "wrote", f)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nIn each member's [cluster] table (its own ID):\n  name = %q\n  link_ca = \"%s/ca.crt\"\n  link_cert = \"%s/ID.crt\"\n  link_key = \"%s/ID.key\"\n", o.Cluster, o.Dir, o.Dir, o.Dir)
	return nil
}

const clusterUsage = `usage: vspc-bridge cluster init -cluster NAME -members ID,ID,... [-hosts NAME,IP,...] [-dir DIR] [-days N] [-force]

Makes the cluster CA (ca.crt, ca.key; kept if present, so running it again
adds members) and one ECDSA certificate per member (ID.crt, ID.key) for the
member link, the etcd client, and 'vspc-bridge etcd' listeners.
`
