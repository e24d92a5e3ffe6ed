//go:build !unix

package authz

import (
	"errors"
	"syscall"
)

func managedSupported() error {
	return errors.New("the managed PDP needs unix sockets and process groups; run cerbos yourself and pass --cerbos-addr")
}

func sysProcAttr() *syscall.SysProcAttr       { return nil }
func signalGroup(pid int, sig syscall.Signal) {}
func processAlive(pid int) bool               { return false }
func ownedDir(dir string) bool                { return false }
