//go:build !linux

package devices

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

func openSerial(_ context.Context, t target.Target, _ rfc2217.Settings, _ *slog.Logger) (Device, error) {
	return nil, fmt.Errorf("devices: serial %s: %w (not built yet)", t.Path, rfc2217.ErrNotSupported)
}
