package vc

import (
	"context"
	"fmt"
)

func runPreflight(ctx context.Context, args []string, e env) int {
	fmt.Fprintln(e.stderr, "vc: preflight: not implemented yet")
	return ExitUsage
}
