//go:build unix

package authz

import (
	"errors"
	"os"
	"syscall"
)

func managedSupported() error { return nil }

// signalGroup signals the PDP's process group (it leads its own group, see
// sysProcAttr), falling back to the process if the group is already gone.
func signalGroup(pid int, sig syscall.Signal) {
	if err := syscall.Kill(-pid, sig); err != nil {
		_ = syscall.Kill(pid, sig)
	}
}

// processAlive reports whether pid exists (EPERM: it exists, just not ours).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ownedDir reports whether dir is a real directory owned by our uid.
func ownedDir(dir string) bool {
	st, err := os.Lstat(dir)
	if err != nil || !st.IsDir() {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(sys.Uid) == os.Getuid()
}
