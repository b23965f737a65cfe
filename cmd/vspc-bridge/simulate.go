package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net/url"
	"sync"

	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// cmdSimulateVM plays an ESXi host's part (the simulated host the tests
// use) and joins the guest's serial line to stdin and stdout.
func cmdSimulateVM(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("simulate-vm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	proxy := fs.String("proxy", "telnet://127.0.0.1:13370", "the bridge's proxy URI (telnet://HOST:PORT)")
	service := fs.String("service", "", "the serial port's service URI (required)")
	direction := fs.String("direction", "client", "client or server")
	name := fs.String("name", "simulated-vm", "VM name")
	uuid := fs.String("uuid", "", "VC UUID (default: random)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge simulate-vm -proxy telnet://HOST:PORT -service URI -direction client|server [-name N -uuid U]\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	u, err := url.Parse(*proxy)
	if err != nil || u.Scheme != "telnet" || u.Host == "" {
		fmt.Fprintf(stderr, "simulate-vm: -proxy must be telnet://HOST:PORT, got %q\n", *proxy)
		return errUsage
	}
	if *service == "" {
		fs.Usage()
		return errUsage
	}
	var dir vspc.Direction
	switch *direction {
	case "client":
		dir = vspc.DirClient
	case "server":
		dir = vspc.DirServer
	default:
		fmt.Fprintf(stderr, "simulate-vm: -direction must be client or server, got %q\n", *direction)
		return errUsage
	}
	if *uuid == "" {
		var b [16]byte
		rand.Read(b[:])
		*uuid = fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	}
	vm := vspctest.VM{Name: *name, VCUUID: *uuid, BIOSUUID: *uuid, LocUUID: *uuid, Direction: dir, ServiceURI: *service}
	c, err := vspctest.Dial(ctx, u.Host, vm)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(stderr, "simulate-vm: %s attached (WILL-PROXY); type to send, Ctrl-D or Ctrl-C to end\n", *name)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(stdout, c)
	}()
	done := make(chan error, 1)
	go func() { _, err := io.Copy(c, stdin); done <- err }()
	select {
	case <-ctx.Done():
	case err = <-done:
	}
	c.Close()
	wg.Wait()
	return err
}
