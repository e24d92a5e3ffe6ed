package main

import (
	"fmt"
	"os"
	goruntime "runtime"
	"runtime/pprof"
)

// cpuProfileEnv names a file to write this process's CPU profile to, from
// start until the command returns. `tollgate load --spawn --cpuprofile FILE`
// sets it for the server it spawns; it is not meant for production use.
const cpuProfileEnv = "TOLLGATE_CPUPROFILE"

// memProfileEnv names a file to write this process's heap profile to when
// the command returns (what is live then, and what was allocated since the
// start): `tollgate load --spawn --memprofile FILE` sets it for the server.
const memProfileEnv = "TOLLGATE_MEMPROFILE"

// writeHeapProfile writes the heap profile to path (nothing when path is
// empty) after a collection, so the profile shows what is live. Failures are
// reported on stderr and do not change the command's outcome.
func writeHeapProfile(path string) {
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tollgate: %s: %v\n", memProfileEnv, err)
		return
	}
	defer f.Close()
	goruntime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		fmt.Fprintf(os.Stderr, "tollgate: %s: %v\n", memProfileEnv, err)
	}
}

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
