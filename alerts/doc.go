// Package alerts matches regular expressions against VM console output
// and raises alerts: a structured log event, a counter and, when
// configured, a webhook POST. It never slows the data it watches.
//
// # Flow
//
//	forwarding path ──Observe(vm, p)──► bounded queue ──► Run: line assembly,
//	  (copies p; never blocks:          (full: chunk      rule matching,
//	   a full queue skips the chunk      skipped and       per-VM rate limit ──► log + counter
//	   and counts it)                    counted)                            └─► webhook queue ──► POST
//
// Console bytes are assembled into lines per stream (VM, route and
// direction). ANSI escape sequences and control characters are removed,
// backspace erases, CR and LF end a line, and lines are cut at MaxLine.
// A line still being written (a prompt such as "login: ") is matched as
// it arrives, and each rule fires at most once per line.
//
// Each VM may raise at most RateLimit alerts per RateWindow (a token
// bucket refilled continuously); the alerts over it are counted as
// suppressed and the number is reported with the VM's next alert.
package alerts
