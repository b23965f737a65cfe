package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vspc-bridge/vspc-bridge/cluster"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

func TestClusterInit(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "b1,b2", "-hosts", "127.0.0.1", "-dir", dir}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, f := range []string{"ca.crt", "ca.key", "b1.crt", "b1.key", "b2.crt", "b2.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(out.String(), `name = "lab"`) {
		t.Errorf("no config hint:\n%s", out.String())
	}
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "b1", "-dir", dir}, nil, &out, &errb); code != 1 {
		t.Errorf("init over existing files: exit %d, want 1", code)
	}
	if code := run(t.Context(), []string{"cluster", "init", "-members", "b1"}, nil, &out, &errb); code != 2 {
		t.Errorf("init without -cluster: exit %d, want 2", code)
	}
	errb.Reset()
	if code := run(t.Context(), []string{"cluster"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage: vspc-bridge cluster init") {
		t.Errorf("cluster without a subcommand: exit %d %q", code, errb.String())
	}
	errb.Reset()
	if code := run(t.Context(), []string{"etcd", "-h"}, nil, &out, &errb); code != 0 || !strings.Contains(errb.String(), "usage: vspc-bridge etcd") {
		t.Errorf("etcd -h: exit %d %q", code, errb.String())
	}
}

// syncBuf is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeLoopbackPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// `vspc-bridge etcd` serves etcd clients until it is stopped, over mutual
// TLS with the certificates of `cluster init`.
func TestEtcdCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"cluster", "init", "-cluster", "lab", "-members", "e1,b1", "-hosts", "127.0.0.1", "-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	client := fmt.Sprintf("https://127.0.0.1:%d", freeLoopbackPort(t))
	peer := fmt.Sprintf("https://127.0.0.1:%d", freeLoopbackPort(t))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var sout, serr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"etcd", "-name", "e1", "-data-dir", filepath.Join(dir, "e1.etcd"), "-listen-client", client, "-listen-peer", peer,
			"-cert", filepath.Join(dir, "e1.crt"), "-key", filepath.Join(dir, "e1.key"), "-ca", filepath.Join(dir, "ca.crt"), "-log-level", "error"}, nil, &sout, &serr)
	}()
	testwait.For(t, "the etcd member to be ready", func() bool { return strings.Contains(sout.String(), "ready") })
	tlsCfg, err := cluster.ClientTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "b1.crt"), filepath.Join(dir, "b1.key"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer pcancel()
	if _, err := cli.Put(pctx, "/vspc/v1/test", "x"); err != nil {
		t.Fatalf("put over mutual TLS: %v", err)
	}
	cli.Close()
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("etcd exit %d: %s", code, serr.String())
	}
}

// A [cluster] config is not served as a single node that claims nothing.
func TestServeRefusesClusterUntilMember(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte("[vspc]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n[cluster]\nname = \"lab\"\nmember = \"m1\"\nendpoints = [\"http://127.0.0.1:1\"]\nlink_listen = \"127.0.0.1:13380\"\nlink_ca = \"ca\"\nlink_cert = \"c\"\nlink_key = \"k\"\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"serve", "-config", cfg}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "cannot run as a cluster member yet") {
		t.Errorf("serve with [cluster]: exit %d %q", code, errb.String())
	}
	if code := run(t.Context(), []string{"check-config", cfg}, nil, &out, &errb); code != 0 {
		t.Errorf("check-config with [cluster]: exit %d %q", code, errb.String())
	}
}
