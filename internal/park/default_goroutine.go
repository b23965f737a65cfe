//go:build !linux || park_goroutine

package park

const defaultBackend = kindGoroutine
