package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/server"
)

// credentialsSandbox serves a sandbox on loopback and points tollgate at it
// as "the real account", with the parent token in a file.
func credentialsSandbox(t *testing.T) (sb *sandbox.Sandbox, tokenFile string) {
	t.Helper()
	sb, err := sandbox.New(sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	tokenFile = filepath.Join(t.TempDir(), "cloudflare-token")
	if err := os.WriteFile(tokenFile, []byte(sb.ParentToken()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TOLLGATE_CONFIG", "")
	t.Setenv("CLOUDFLARE_API_TOKEN", "")
	t.Setenv("CLOUDFLARE_API_TOKEN_FILE", tokenFile)
	t.Setenv("CLOUDFLARE_ACCOUNT_ID", sb.AccountID())
	t.Setenv("TOLLGATE_CLOUDFLARE_API_BASE", srv.URL+sandbox.APIPrefix)
	return sb, tokenFile
}

// TestCredentialsRotateAndStatus follows the README: the parent token in a
// file, `credentials status`, `credentials rotate`, and the audit trail.
func TestCredentialsRotateAndStatus(t *testing.T) {
	sb, file := credentialsSandbox(t)
	db := filepath.Join(t.TempDir(), "t.db")
	old := sb.ParentToken()

	var st parentStatusJSON
	if err := json.Unmarshal([]byte(mustRun(t, db, "credentials", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Source != "file "+file || !st.Rotatable || st.TokenID == "" || st.Status != "active" || st.ExpiresOn != nil ||
		st.RotateEvery != "720h0m0s" || st.NextRotation == nil || len(st.Policies) != 1 ||
		strings.Join(st.Policies[0].Groups, ",") != "Account API Tokens Read,Account API Tokens Write" {
		t.Fatalf("status %+v", st)
	}
	out := mustRun(t, db, "credentials", "status")
	for _, want := range []string{"file " + file, "value age", "next rotation", "Account API Tokens Write"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	out = mustRun(t, db, "credentials", "rotate")
	b, _ := os.ReadFile(file)
	rolled := strings.TrimSpace(string(b))
	if rolled == old || rolled != sb.ParentToken() || !strings.Contains(out, st.TokenID) {
		t.Fatalf("rotate: %s; the file does not hold the sandbox's new parent token", out)
	}
	if strings.Contains(out, rolled) || strings.Contains(out, old) {
		t.Fatal("rotate printed a token value")
	}
	// The next command reads the new value from the file.
	mustRun(t, db, "credentials", "status")

	l, err := ledger.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var rotations int
	_ = l.Events(context.Background(), ledger.EventQuery{}, func(e ledger.Event) error {
		if strings.Contains(string(e.Data), rolled) || strings.Contains(string(e.Data), old) {
			t.Errorf("event %s holds a token value", e.Type)
		}
		if e.Type == server.EventParentRotated {
			rotations++
			if e.Actor != cliActor() || !strings.Contains(string(e.Data), st.TokenID) {
				t.Errorf("rotation event %s %s", e.Actor, e.Data)
			}
		}
		return nil
	})
	if rotations != 1 {
		t.Fatalf("%d rotation events, want 1", rotations)
	}
}

// TestCredentialsRotateRefusesEnvironment: a token from the environment
// cannot be rewritten, so rotate refuses and says what to do.
func TestCredentialsRotateRefusesEnvironment(t *testing.T) {
	sb, _ := credentialsSandbox(t)
	t.Setenv("CLOUDFLARE_API_TOKEN_FILE", "")
	t.Setenv("CLOUDFLARE_API_TOKEN", sb.ParentToken())
	db := filepath.Join(t.TempDir(), "t.db")
	before := sb.ParentToken()
	_, err := run(t, db, "credentials", "rotate")
	if err == nil || !strings.Contains(err.Error(), "CLOUDFLARE_API_TOKEN_FILE") || !strings.Contains(err.Error(), "cannot rewrite") {
		t.Fatalf("rotate with an environment token: %v", err)
	}
	if sb.ParentToken() != before {
		t.Fatal("the token was rolled although it could not be stored")
	}
	out := mustRun(t, db, "credentials", "status")
	if !strings.Contains(out, "not possible") {
		t.Fatalf("status of an environment token:\n%s", out)
	}
	t.Setenv("CLOUDFLARE_API_TOKEN_FILE", "/x")
	if _, err := run(t, db, "credentials", "status"); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("both variables set: %v", err)
	}
}

// TestCredentialsRotateSandbox: with no credentials, rotate rolls the
// sandbox's parent token in the database's sandbox state, which the next
// process reads.
func TestCredentialsRotateSandbox(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	for _, k := range []string{"CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_TOKEN_FILE", "CLOUDFLARE_ACCOUNT_ID", "TOLLGATE_CLOUDFLARE_API_BASE"} {
		t.Setenv(k, "")
	}
	db := filepath.Join(t.TempDir(), "t.db")
	mustRun(t, db, "credentials", "status")
	state := db + ".sandbox.json"
	before := sandboxParentOf(t, state)
	out := mustRun(t, db, "credentials", "rotate")
	if !strings.Contains(out, "the sandbox state "+state) {
		t.Fatalf("rotate: %s", out)
	}
	after := sandboxParentOf(t, state)
	if after == before {
		t.Fatal("the sandbox state's parent token did not change")
	}
	mustRun(t, db, "credentials", "rotate") // the second run starts from the new value
	if sandboxParentOf(t, state) == after {
		t.Fatal("the second rotation did not change the value")
	}
}

func sandboxParentOf(t *testing.T, state string) string {
	t.Helper()
	sb, err := sandbox.New(sandbox.Options{StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	return sb.ParentToken()
}

func TestSandboxStatePath(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	legacy := filepath.Join(dir, "sandbox.json")
	if err := os.WriteFile(legacy, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Another database in the directory gets a state of its own.
	got, err := sandboxStatePath(filepath.Join(dir, "stdio.db"), log)
	if err != nil || got != filepath.Join(dir, "stdio.db.sandbox.json") {
		t.Fatalf("stdio.db: %s, %v", got, err)
	}
	// The default database adopts the legacy file.
	got, err = sandboxStatePath(filepath.Join(dir, "tollgate.db"), log)
	if err != nil || got != filepath.Join(dir, "tollgate.db.sandbox.json") {
		t.Fatalf("tollgate.db: %s, %v", got, err)
	}
	if _, err := os.Stat(got); err != nil {
		t.Fatal("the legacy state was not adopted")
	}
	if _, err := os.Stat(legacy); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the legacy state is still there")
	}
}
