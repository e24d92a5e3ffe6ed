package authz

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeCerbos writes a cerbos wrapper whose --version runs body and whose
// other commands run the real binary.
func fakeCerbos(t *testing.T, versionBody string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cerbos")
	script := "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then\n" + versionBody + "\nfi\nexec " + cerbosBin(t) + " \"$@\"\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStartManagedDoesNotWaitForTheVersion: the version check runs beside
// the start. Its --version blocks until a file exists that the test creates
// only after StartManaged returned; a start that waited for it would never
// return.
func TestStartManagedDoesNotWaitForTheVersion(t *testing.T) {
	t.Parallel()
	gate := filepath.Join(t.TempDir(), "gate")
	bin := fakeCerbos(t, "while [ ! -e "+gate+" ]; do sleep 0.05; done\necho 0.55.0\nexit 0")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := StartManaged(ctx, ManagedConfig{Binary: bin, PolicyDir: repoPolicies(t), Logger: slog.New(slog.DiscardHandler)})
	writeFile(t, gate, "")
	if err != nil {
		t.Fatalf("StartManaged: %v", err)
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestStartManagedReportsABrokenBinary: when the start fails, the version
// check's verdict is waited for and names the binary as the problem.
func TestStartManagedReportsABrokenBinary(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "cerbos")
	writeFile(t, p, "#!/bin/sh\necho 'not cerbos' >&2\nexit 2\n")
	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := StartManaged(context.Background(), ManagedConfig{Binary: p, PolicyDir: repoPolicies(t), Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "--version") || !strings.Contains(err.Error(), "go tool task setup") {
		t.Fatalf("err = %v, want it to name the failed --version and how to install", err)
	}
}
