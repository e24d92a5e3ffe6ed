package main

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/ledger"
)

// TestAuditHeadAnchorAndBundleCLI follows the README: save a signed head,
// verify against it, export a bundle and check it offline; then cut the
// newest events and watch the anchor catch it.
func TestAuditHeadAnchorAndBundleCLI(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	dir := t.TempDir()
	db := filepath.Join(dir, "t.db")
	mustRun(t, db, "budget", "set", "--scope", "global", "--window", "month", "--limit", "100")
	mustRun(t, db, "freeze", "--agent", "web-bot", "--reason", "testing the audit")
	mustRun(t, db, "unfreeze", "--agent", "web-bot")

	var head ledger.SignedHead
	headJSON := mustRun(t, db, "audit", "head", "--json")
	if err := json.Unmarshal([]byte(headJSON), &head); err != nil || head.Seq < 3 || head.Signature == "" || head.PublicKey == "" {
		t.Fatalf("audit head --json: %v\n%s", err, headJSON)
	}
	if err := head.Check(cliAuditKey(t).PublicKey()); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, db, "audit", "head"); !strings.Contains(out, head.Hash) || !strings.Contains(out, head.KeyID) {
		t.Fatalf("audit head: %s", out)
	}
	anchor := filepath.Join(dir, "anchor.json")
	if err := os.WriteFile(anchor, []byte(headJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, db, "budget", "set", "--scope", "global", "--window", "day", "--limit", "10")
	if out := mustRun(t, db, "audit", "verify", "--anchor", anchor); !strings.Contains(out, "intact") || !strings.Contains(out, head.KeyID) {
		t.Fatalf("audit verify --anchor: %s", out)
	}

	bundle := filepath.Join(dir, "audit.bundle")
	if err := os.WriteFile(bundle, []byte(mustRun(t, db, "audit", "export")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, db, "audit", "verify", "--bundle", bundle); !strings.Contains(out, "bundle intact") || !strings.Contains(out, "which is the audit key") {
		t.Fatalf("audit verify --bundle: %s", out)
	}
	// Offline, with no key file at all: pinned by the public key alone.
	t.Setenv("TOLLGATE_AUDIT_KEY_FILE", filepath.Join(dir, "no-such.key"))
	if out := mustRun(t, db, "audit", "verify", "--bundle", bundle, "--public-key", head.PublicKey); !strings.Contains(out, "which is --public-key") {
		t.Fatalf("pinned by --public-key: %s", out)
	}
	if out := mustRun(t, db, "audit", "verify", "--bundle", bundle); !strings.Contains(out, "NOT PINNED") {
		t.Fatalf("unpinned bundle: %s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "no-such.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("verifying a bundle created a key file")
	}
	t.Setenv("TOLLGATE_AUDIT_KEY_FILE", "")
	b, _ := os.ReadFile(bundle)
	tampered := filepath.Join(dir, "tampered.bundle")
	if err := os.WriteFile(tampered, []byte(strings.Replace(string(b), `"limit_text":"100.00 USD"`, `"limit_text":"900.00 USD"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"limit_text":"100.00 USD"`) {
		t.Fatalf("the bundle lacks the event to tamper with:\n%.2000s", b)
	}
	if out, err := run(t, db, "audit", "verify", "--bundle", tampered); err == nil || !strings.Contains(out, "BROKEN at event") {
		t.Fatalf("a tampered bundle: %v\n%s", err, out)
	}

	// The newest events, the anchored head among them, disappear.
	sqlite3(t, db, `DELETE FROM audit_events WHERE seq >= `+itoa(head.Seq-1))
	sqlite3(t, db, `DELETE FROM audit_checkpoints WHERE seq > 0`)
	if out, err := run(t, db, "audit", "verify"); err != nil {
		t.Fatalf("without an anchor the shorter chain still links up: %v\n%s", err, out)
	}
	out, err := run(t, db, "audit", "verify", "--anchor", anchor)
	if err == nil || !strings.Contains(out, "BROKEN at event "+itoa(head.Seq-1)) || !strings.Contains(out, "missing") {
		t.Fatalf("audit verify --anchor after the cut: %v\n%s", err, out)
	}
	// The same head in a checkpoint file is checked without --anchor.
	cp := filepath.Join(dir, "checkpoints.jsonl")
	line, _ := json.Marshal(head)
	if err := os.WriteFile(cp, append(line, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, db, "audit", "verify", "--audit-checkpoint-file", cp); err == nil || !strings.Contains(out, "checkpoint file") {
		t.Fatalf("audit verify with the checkpoint file: %v\n%s", err, out)
	}

	for _, bad := range [][]string{
		{"audit", "export", "--operation", "op_x"},
		{"audit", "export", "--format", "csv"},
		{"audit", "verify", "--public-key", "abc"},
		{"audit", "verify", "--bundle", bundle, "--anchor", anchor},
	} {
		if _, err := run(t, db, bad...); err == nil {
			t.Errorf("tollgate %s: accepted", strings.Join(bad, " "))
		}
	}
}

// TestAuditKeyCLI: the key file is created 0600 where the README says, a
// loose or wrong key is refused with both key ids, and an old database is
// keyed only on request when its key already existed.
func TestAuditKeyCLI(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	dir := t.TempDir()
	db := filepath.Join(dir, "t.db")
	key := filepath.Join(dir, "keys", "audit.key")
	t.Setenv("TOLLGATE_AUDIT_KEY_FILE", key)
	mustRun(t, db, "budget", "set", "--scope", "global", "--window", "month", "--limit", "100")
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v, want 0600", fi, err)
	}
	k, err := ledger.LoadAuditKey(key)
	if err != nil {
		t.Fatal(err)
	}

	// Another key on the same database: refused, naming both, and the key
	// file that was created for nothing is gone again.
	other := filepath.Join(dir, "other.key")
	_, err = run(t, db, "budget", "set", "--scope", "global", "--window", "day", "--limit", "1", "--audit-key", other)
	if err == nil || !strings.Contains(err.Error(), k.ID()) || !strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), "same key file") {
		t.Fatalf("a second key: %v", err)
	}
	if _, err := os.Stat(other); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the mismatching key file was left behind: %v", err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, db, "budget", "list"); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Fatalf("a world-readable key: %v", err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	// Reading works without the key; signing does not.
	t.Setenv("TOLLGATE_AUDIT_KEY_FILE", filepath.Join(dir, "absent.key"))
	mustRun(t, db, "budget", "list")
	if _, err := run(t, db, "audit", "head"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("audit head without the key: %v", err)
	}
	if _, err := run(t, db, "audit", "verify"); err == nil || !strings.Contains(err.Error(), "keyed with audit key "+k.ID()) {
		t.Fatalf("audit verify without the key: %v", err)
	}

	// An old database (no key yet) and a key that already existed.
	t.Setenv("TOLLGATE_AUDIT_KEY_FILE", key)
	old := filepath.Join(dir, "old.db")
	l, err := ledger.Open(context.Background(), old)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(context.Background(), ledger.NewEvent("test.legacy", "system", "", nil)); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	if _, err := run(t, old, "budget", "set", "--scope", "global", "--window", "day", "--limit", "1"); err == nil || !strings.Contains(err.Error(), "audit adopt-key") {
		t.Fatalf("an old database with an existing key: %v", err)
	}
	if out := mustRun(t, old, "audit", "adopt-key"); !strings.Contains(out, "events 1 to 1 keep the plain hashes") {
		t.Fatalf("audit adopt-key: %s", out)
	}
	mustRun(t, old, "budget", "set", "--scope", "global", "--window", "day", "--limit", "1")
	if out := mustRun(t, old, "audit", "verify"); !strings.Contains(out, "intact") {
		t.Fatalf("after adopt-key: %s", out)
	}
}

// sqlite3 edits the database with the sqlite3 shell, as a tamperer would.
func sqlite3(t *testing.T, path, stmt string) {
	t.Helper()
	bin, err := exec.LookPath("sqlite3")
	if err != nil {
		const how = "no sqlite3 shell: run go tool task setup:sqlite3 as root (apt-get install -y sqlite3)"
		if os.Getenv("CI") == "true" {
			t.Fatal(how)
		}
		t.Skip(how)
	}
	if out, err := exec.Command(bin, path, stmt).CombinedOutput(); err != nil {
		t.Fatalf("sqlite3 %q: %v: %s", stmt, err, out)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
