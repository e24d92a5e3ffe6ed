package authz

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// EnvCerbosBin names the environment variable that points at the cerbos
// binary; the Taskfile sets it for every task.
const EnvCerbosBin = "TOLLGATE_CERBOS_BIN"

// installHint tells the operator how to get the binary.
const installHint = `install it with "go tool task setup" (run in the tollgate checkout), or set ` + EnvCerbosBin + ` to a cerbos 0.55 binary`

// ErrBinaryNotFound is returned (wrapped) by [FindBinary] when no cerbos
// binary can be found.
var ErrBinaryNotFound = errors.New("cerbos binary not found")

// toolsBin is where `go tool task setup` installs cerbos, relative to the
// module root.
var toolsBin = filepath.Join(".tools", "bin", "cerbos")

// FindBinary locates the cerbos binary: $TOLLGATE_CERBOS_BIN if set (it must
// then exist), else <module root>/.tools/bin/cerbos (walking up from the
// working directory to the nearest go.mod), else a cerbos next to the running
// executable (`go tool task build` puts tollgate in .tools/bin too), else
// "cerbos" on PATH. The error names every place it looked and how to install.
func FindBinary() (string, error) {
	wd, _ := os.Getwd()
	exe, _ := os.Executable()
	return findBinary(os.Getenv, wd, exe, exec.LookPath)
}

func findBinary(getenv func(string) string, wd, exe string, lookPath func(string) (string, error)) (string, error) {
	if p := getenv(EnvCerbosBin); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %w; %s", ErrBinaryNotFound, EnvCerbosBin, p, err, installHint)
		}
		return p, nil
	}
	var looked []string
	looked = append(looked, EnvCerbosBin+" is not set")
	if root, ok := moduleRoot(wd); ok {
		p := filepath.Join(root, toolsBin)
		if checkExecutable(p) == nil {
			return p, nil
		}
		looked = append(looked, p+" does not exist")
	} else if wd != "" {
		looked = append(looked, "no go.mod above "+wd)
	}
	if exe != "" {
		p := filepath.Join(filepath.Dir(exe), "cerbos")
		if checkExecutable(p) == nil {
			return p, nil
		}
		looked = append(looked, p+" does not exist")
	}
	if p, err := lookPath("cerbos"); err == nil {
		return p, nil
	}
	looked = append(looked, `"cerbos" is not on PATH`)
	return "", fmt.Errorf("%w: %s; %s", ErrBinaryNotFound, strings.Join(looked, ", "), installHint)
}

// moduleRoot walks up from dir to the nearest directory holding go.mod.
func moduleRoot(dir string) (string, bool) {
	if dir == "" {
		return "", false
	}
	dir = filepath.Clean(dir)
	for {
		if st, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && st.Mode().IsRegular() {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// checkExecutable reports why p cannot be run, following symlinks (the
// Taskfile installs cerbos as a symlink into node_modules).
func checkExecutable(p string) error {
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("no such file")
	case err != nil:
		return err
	case st.IsDir():
		return errors.New("is a directory")
	case st.Mode().Perm()&0o111 == 0:
		return errors.New("is not executable")
	}
	return nil
}
