package devices

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// openRFC2217 opens an RFC 2217 device. The RFC 2217 client is being
// written in package rfc2217; until it lands this kind fails to open.
func openRFC2217(_ context.Context, t Target, _ rfc2217.Settings, _ *Options, _ *slog.Logger) (Device, error) {
	return nil, fmt.Errorf("devices: rfc2217 %s: %w (client not built yet)", t.Addr(), rfc2217.ErrNotSupported)
}
