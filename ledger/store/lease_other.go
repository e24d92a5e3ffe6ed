//go:build !unix

package store

import "os"

// Without flock, leases live by heartbeat alone.
func lockLeaseFile(string, string) (*os.File, string, fileID, error) { return nil, "", fileID{}, nil }

func probeLeaseFile(string, fileID) (alive, verified bool) { return false, false }

func removeDeadLeaseFile(string, fileID) {}
