package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// cpuProfileEnv names a file to write this process's CPU profile to, from
// start until the command returns. `tollgate load --spawn --cpuprofile FILE`
// sets it for the server it spawns; it is not meant for production use.
const cpuProfileEnv = "TOLLGATE_CPUPROFILE"

// startCPUProfile starts a CPU profile written to path (none when path is
// empty) and returns the function that stops it and closes the file. A
// profile that cannot start is reported on stderr and does not stop the
// command.
func startCPUProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tollgate: %s: %v\n", cpuProfileEnv, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "tollgate: %s: %v\n", cpuProfileEnv, err)
		_ = f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
