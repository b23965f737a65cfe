package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/alerts"
	"github.com/vspc-bridge/vspc-bridge/configs"
)

// reload re-reads the config file and applies it: all of it, or nothing
// when it is invalid, a file it names cannot be read or a new listener
// cannot be bound. Every problem is logged.
func (d *daemon) reload(ctx context.Context) admin.ReloadResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reloads.Last = time.Now()
	reject := func(err error) admin.ReloadResult {
		var lines []string
		var me *multierror.Error
		if errors.As(err, &me) {
			for _, e := range me.Errors {
				lines = append(lines, e.Error())
			}
		} else {
			lines = []string{err.Error()}
		}
		for _, l := range lines {
			d.log.Error("config reload rejected; the running config stays in force", "config", d.source(), "problem", l)
		}
		d.reloads.Rejected++
		d.reloads.LastError = strings.Join(lines, "\n")
		return admin.ReloadResult{Errors: lines}
	}
	if d.closing.Load() {
		return reject(errors.New("shutting down"))
	}
	var cfg *configs.Config
	if d.opts.path == "" {
		cfg = configs.Default()
	} else {
		var err error
		if cfg, err = configs.Load(d.opts.path); err != nil {
			return reject(err)
		}
	}
	p, err := d.prepare(cfg)
	if err != nil {
		return reject(err)
	}
	if err := d.bind(p, d.lns); err != nil {
		return reject(err)
	}

	// Commit: nothing below fails.
	old := d.cfg
	changes := describeChanges(old, cfg)
	oldThumb := configs.LeafThumbprint(d.vspcCert.Load())
	d.commitSecrets(p)
	if nt := configs.LeafThumbprint(p.vspcCert); p.vspcCert != nil && nt != oldThumb {
		changes = append(changes, "telnets certificate: thumbprint "+nt)
		if oldThumb != "" {
			d.log.Warn("the telnets certificate changed: VMs whose proxy URI pins the old thumbprint cannot reconnect until it is updated (vspc-bridge vc provision)",
				"old_thumbprint", oldThumb, "new_thumbprint", nt, "proxy_uri", d.telnetsURI(cfg, d.lns[kindVSPCTLS]))
		}
	}
	d.srv.SetConfig(vspcConfig(cfg, nil, nil)) // the bridge and logger stay
	for _, st := range d.br.ApplyConfig(cfg) {
		changes = append(changes, fmt.Sprintf("closed VM %s port %s: its route was removed", st.VMName, st.ServiceURI))
	}
	ac := alerts.FromConfig(cfg)
	ac.Logger = d.log
	d.alerts.SetConfig(ac)
	if d.setUsers != nil {
		d.setUsers(cfg)
		if !reflect.DeepEqual(old.Users, cfg.Users) {
			changes = append(changes, fmt.Sprintf("remote users: %d (new logins)", len(cfg.Users)))
		}
	}
	if d.opts.level != nil && !d.opts.levelFixed {
		d.opts.level.Set(cfg.Log.SlogLevel())
	}
	for _, o := range append(p.replaced, p.removed...) {
		o.retire(o.kind != kindAdmin) // this reload may be a request on that admin listener
		delete(d.lns, o.kind)
		changes = append(changes, fmt.Sprintf("closed %s listener %s", o.kind, o.addr))
	}
	for _, b := range p.bound {
		d.lns[b.kind] = b
		d.serveListener(b)
		d.log.Info("listening", "kind", b.kind, "addr", b.ln.Addr().String())
		changes = append(changes, fmt.Sprintf("%s listening on %s", b.kind, b.ln.Addr()))
	}
	restart := needsRestart(old, cfg, d.setUsers != nil)
	switch {
	case d.web != nil:
		applied, later := d.web.apply(cfg, p.webCert)
		changes = append(changes, applied...)
		restart = append(restart, later...)
	case cfg.Web.Listen != "":
		restart = append(restart, "web.listen")
	}
	if len(restart) > 0 {
		d.log.Warn("config reload: these settings changed but apply only after a restart", "keys", strings.Join(restart, ", "))
		changes = append(changes, "needs a restart to apply: "+strings.Join(restart, ", "))
	}
	d.cfg = cfg
	d.reloads.OK++
	d.reloads.LastError = ""
	if len(changes) == 0 {
		changes = []string{"no changes"}
	}
	d.log.Info("config reloaded", "config", d.source(), "changes", strings.Join(changes, "; "))
	return admin.ReloadResult{OK: true, Changes: changes}
}

// describeChanges lists what a reload changes, for the log and the API.
func describeChanges(old, cfg *configs.Config) []string {
	var out []string
	oldR := map[string]configs.Route{}
	for _, r := range old.Routes {
		oldR[r.Name] = r
	}
	newR := map[string]bool{}
	for _, r := range cfg.Routes {
		newR[r.Name] = true
		o, ok := oldR[r.Name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("route %q added (device %s)", r.Name, r.Device))
		case o.Device != r.Device || o.Service != r.Service || o.VM != r.VM || o.UUID != r.UUID || o.SettingsText != r.SettingsText || o.FlowText != r.FlowText:
			out = append(out, fmt.Sprintf("route %q changed (applies when its VMs next connect)", r.Name))
		}
	}
	for _, r := range old.Routes {
		if !newR[r.Name] {
			out = append(out, fmt.Sprintf("route %q removed", r.Name))
		}
	}
	if !slices.Equal(old.Policy.ConnectAllow, cfg.Policy.ConnectAllow) {
		out = append(out, "policy.connect_allow changed")
	}
	if old.Policy.ReconnectMin != cfg.Policy.ReconnectMin || old.Policy.ReconnectMax != cfg.Policy.ReconnectMax || old.Policy.DialTimeout != cfg.Policy.DialTimeout {
		out = append(out, "policy reconnect/dial limits changed (new links)")
	}
	if !reflect.DeepEqual(old.AlertRules, cfg.AlertRules) || old.Alerts != cfg.Alerts {
		out = append(out, fmt.Sprintf("alerts: %d rules", len(cfg.AlertRules)))
	}
	if old.Admin.Token != cfg.Admin.Token || old.Admin.TokenFile != cfg.Admin.TokenFile {
		out = append(out, "admin token changed")
	}
	if old.Log.Level != cfg.Log.Level {
		out = append(out, "log.level "+cfg.Log.Level)
	}
	ov, nv := old.VSPC, cfg.VSPC
	for _, k := range []struct {
		key, when string
		changed   bool
	}{
		{"vspc.handshake_timeout", "new connections", ov.HandshakeTimeout != nv.HandshakeTimeout},
		{"vspc.identify_timeout", "new connections", ov.IdentifyTimeout != nv.IdentifyTimeout},
		{"vspc.max_sessions", "new connections", ov.MaxSessions != nv.MaxSessions},
		{"vspc.max_subnegotiation", "new connections", ov.MaxSubnegotiation != nv.MaxSubnegotiation},
		{"vspc.grace_period", "ports that detach from now on", ov.GracePeriod != nv.GracePeriod},
		{"policy.directions", "new VM serial ports", !slices.Equal(old.Policy.Directions, cfg.Policy.Directions)},
		{"vmotion", "hand-overs that begin from now on", old.VMotion != cfg.VMotion},
	} {
		if k.changed {
			out = append(out, k.key+" changed ("+k.when+")")
		}
	}
	return out
}

// needsRestart lists the keys that changed but that a running bridge
// cannot take on: the listeners' keepalive, the log format, the alert
// queue and remote access are set up at start. The web console's keys
// are the web console's (webConsole.apply).
func needsRestart(old, cfg *configs.Config, usersReload bool) []string {
	var out []string
	ov, nv := old.VSPC, cfg.VSPC
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"vspc.keepalive", ov.Keepalive != nv.Keepalive},
		{"log.format", old.Log.Format != cfg.Log.Format},
		{"alerts.queue", old.Alerts.Queue != cfg.Alerts.Queue},
		{"remote", !reflect.DeepEqual(old.Remote, cfg.Remote)},
		{"cluster", !reflect.DeepEqual(old.Cluster, cfg.Cluster)},
		{"user", !usersReload && !reflect.DeepEqual(old.Users, cfg.Users)},
	} {
		if k.changed {
			out = append(out, k.key)
		}
	}
	return out
}
