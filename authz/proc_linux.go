//go:build linux

package authz

import "syscall"

// sysProcAttr puts the PDP in its own process group (a Ctrl-C at the
// terminal reaches tollgate, which then stops the PDP in order, instead of
// killing both at once) and asks the kernel to SIGKILL it when the forking
// thread dies, so tollgate dying by any means, SIGKILL included, takes the
// PDP with it. Go's forkExec re-checks the parent after prctl, closing the
// race where tollgate dies between fork and prctl.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
