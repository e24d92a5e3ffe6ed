package authz

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindBinary(t *testing.T) {
	t.Parallel()
	// A fake checkout: go.mod at the root and an executable .tools/bin/cerbos.
	repo := t.TempDir()
	writeFile(t, filepath.Join(repo, "go.mod"), "module example.com/x\n")
	sub := filepath.Join(repo, "server", "deep")
	if err := os.MkdirAll(filepath.Join(repo, ".tools", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	installed := filepath.Join(repo, ".tools", "bin", "cerbos")
	if err := os.WriteFile(installed, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(t.TempDir(), "cerbos")
	writeFile(t, notExec, "x")
	exeDir := t.TempDir()
	besideExe := filepath.Join(exeDir, "cerbos")
	if err := os.WriteFile(besideExe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir() // no go.mod above (t.TempDir lives under /tmp)

	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvCerbosBin {
				return v
			}
			return ""
		}
	}
	noPath := func(string) (string, error) { return "", errors.New("not found") }
	onPath := func(string) (string, error) { return "/usr/local/bin/cerbos", nil }

	tests := []struct {
		name     string
		getenv   func(string) string
		wd, exe  string
		lookPath func(string) (string, error)
		want     string
		errHas   []string
	}{
		{name: "env wins", getenv: env(besideExe), wd: sub, lookPath: onPath, want: besideExe},
		{name: "env set but missing is an error, not a fallback", getenv: env("/nope/cerbos"), wd: sub, lookPath: onPath,
			errHas: []string{"TOLLGATE_CERBOS_BIN=/nope/cerbos", "no such file", "go tool task setup"}},
		{name: "env set but not executable", getenv: env(notExec), wd: sub, lookPath: onPath,
			errHas: []string{"is not executable"}},
		{name: "module root from a subdirectory", getenv: env(""), wd: sub, lookPath: onPath, want: installed},
		{name: "next to the executable", getenv: env(""), wd: empty, exe: filepath.Join(exeDir, "tollgate"), lookPath: onPath, want: besideExe},
		{name: "PATH last", getenv: env(""), wd: empty, lookPath: onPath, want: "/usr/local/bin/cerbos"},
		{name: "nowhere", getenv: env(""), wd: empty, exe: "/opt/tollgate/tollgate", lookPath: noPath, errHas: []string{
			"cerbos binary not found",
			"TOLLGATE_CERBOS_BIN is not set",
			"/opt/tollgate/cerbos does not exist",
			`"cerbos" is not on PATH`,
			`install it with "go tool task setup"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := findBinary(tt.getenv, tt.wd, tt.exe, tt.lookPath)
			if len(tt.errHas) == 0 {
				if err != nil || got != tt.want {
					t.Fatalf("findBinary = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("findBinary = %q, want an error", got)
			}
			if !errors.Is(err, ErrBinaryNotFound) {
				t.Errorf("error %v is not ErrBinaryNotFound", err)
			}
			for _, s := range tt.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

// TestFindBinaryInThisCheckout is the real lookup the integration tests use:
// `go tool task setup` must have installed cerbos, or this fails.
func TestFindBinaryInThisCheckout(t *testing.T) {
	t.Parallel()
	bin := cerbosBin(t)
	if err := checkExecutable(bin); err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
}
