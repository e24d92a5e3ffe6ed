//go:build !unix

package cloudflare

// lockFile is a no-op where flock is unavailable: rotate a shared token
// file from one process at a time there.
func lockFile(string) (unlock func(), err error) { return func() {}, nil }
