//go:build !unix

package ledger

// LockServer is a no-op where flock is unavailable; run one server per
// database there by hand.
func (db *DB) LockServer() (unlock func(), err error) { return func() {}, nil }
