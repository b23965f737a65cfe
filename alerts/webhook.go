package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// postLoop sends queued alerts to the webhook, one at a time, until ctx
// is done. A slow or failing webhook only fills its own queue (then
// alerts are dropped from it and counted); matching goes on.
func (m *Matcher) postLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-m.hooks:
			m.mu.Lock()
			url, client := m.cfg.Webhook, m.client
			m.mu.Unlock()
			if url == "" {
				continue // turned off by a reload
			}
			err := post(ctx, client, url, a)
			m.mu.Lock()
			if err != nil {
				m.stats.WebhookFailed++
			} else {
				m.stats.WebhookSent++
			}
			m.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				m.log.Warn("console alert webhook failed", "vm", a.VM, "rule", a.Rule, "err", err)
			}
		}
	}
}

func post(ctx context.Context, client *http.Client, url string, a Alert) error {
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("alerts: webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vspc-bridge-alerts")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("alerts: webhook: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("alerts: webhook %s answered %s", url, resp.Status)
	}
	return nil
}
