package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls a bridge's admin API (the status, sessions and reload
// commands use it).
type Client struct {
	// Base is the endpoint's base URL, "http://127.0.0.1:13372" or
	// "https://…". A bare host:port means http://.
	Base  string
	Token string       // bearer token; "" none
	HTTP  *http.Client // nil: http.DefaultClient
}

// StatusError is an answer other than 2xx.
type StatusError struct {
	URL    string
	Status string // "401 Unauthorized"
	Code   int
	Msg    string // the server's error text, if any
	Body   []byte
}

func (e *StatusError) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("admin: %s: %s: %s", e.URL, e.Status, e.Msg)
	}
	return fmt.Sprintf("admin: %s: %s", e.URL, e.Status)
}

// BaseURL turns an address ("127.0.0.1:13372", "https://host:13372")
// into a base URL.
func BaseURL(addr string, tls bool) string {
	if strings.Contains(addr, "://") {
		return strings.TrimSuffix(addr, "/")
	}
	if tls {
		return "https://" + addr
	}
	return "http://" + addr
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	u := BaseURL(c.Base, false) + path
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin: %s %s: %w", method, u, err)
	}
	// A rejected reload (422) still carries a ReloadResult.
	if resp.StatusCode/100 != 2 && !(resp.StatusCode == http.StatusUnprocessableEntity && path == "/api/v1/reload") {
		se := &StatusError{URL: method + " " + u, Status: resp.Status, Code: resp.StatusCode, Body: body}
		var eb ErrorBody
		if json.Unmarshal(body, &eb) == nil {
			se.Msg = eb.Error
		} else {
			se.Msg = strings.TrimSpace(string(body))
		}
		return se
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("admin: %s %s: bad JSON answer: %w", method, u, err)
	}
	return nil
}

// Status fetches GET /api/v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/api/v1/status", &st)
	return st, err
}

// Sessions fetches GET /api/v1/sessions, of one VM (name or VC UUID) when
// vm is not empty.
func (c *Client) Sessions(ctx context.Context, vm string) (SessionList, error) {
	var l SessionList
	p := "/api/v1/sessions"
	if vm != "" {
		p += "?vm=" + url.QueryEscape(vm)
	}
	err := c.do(ctx, http.MethodGet, p, &l)
	return l, err
}

// Devices fetches GET /api/v1/devices.
func (c *Client) Devices(ctx context.Context) (DeviceList, error) {
	var l DeviceList
	err := c.do(ctx, http.MethodGet, "/api/v1/devices", &l)
	return l, err
}

// Reload calls POST /api/v1/reload. A rejected config is not an error:
// the result has OK false and the reasons in Errors.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var r ReloadResult
	err := c.do(ctx, http.MethodPost, "/api/v1/reload", &r)
	return r, err
}
