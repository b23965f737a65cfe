package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge check-config FILE\n\nReports every problem in FILE at once, with line numbers; exit status 1 if there is any.\n")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	cfg, err := configs.Load(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stdout, err)
		return fmt.Errorf("%s is not valid", fs.Arg(0))
	}
	fmt.Fprintf(stdout, "%s: OK (listen %s, %d routes, connect_allow %v)\n", fs.Arg(0), cfg.VSPC.Listen, len(cfg.Routes), cfg.Policy.ConnectAllow)
	return nil
}
