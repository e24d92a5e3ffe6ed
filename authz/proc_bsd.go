//go:build unix && !linux

package authz

import "syscall"

// sysProcAttr puts the PDP in its own process group. Outside Linux there is
// no Pdeathsig: Stop and the signal handling in cmd/tollgate are what stop
// the PDP, so a SIGKILLed tollgate can leave it running here.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
