//go:build !linux

package park

// backendKinds are the backends this build has, for the tests.
func backendKinds() []backendKind { return []backendKind{kindGoroutine} }
