// Package admin is the bridge's HTTP admin endpoint: status as JSON,
// Prometheus metrics, health checks and config reload.
//
//	GET  /healthz            200 "ok" while the process serves HTTP (no token needed)
//	GET  /readyz             200 when the VM listeners are up, else 503 (no token needed)
//	GET  /api/v1/status      the bridge: version, listeners and proxy URIs, counters, reloads
//	GET  /api/v1/sessions    every VM serial port (?vm=NAME or UUID selects one VM)
//	GET  /api/v1/devices     every device or remote system link
//	POST /api/v1/reload      re-read the config file; 200 with the changes, 422 with the errors
//	GET  /metrics            Prometheus text format (see Collector)
//
// Every path except /healthz and /readyz needs "Authorization: Bearer
// TOKEN" when a token is configured. Snapshots are taken at request time
// from the server and the bridge; nothing is cached. Client is the Go
// client the status command uses.
package admin
