package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rawEvent is an audit row as a tamperer with write access to the file sees it.
type rawEvent struct {
	seq, at                               int64
	typ, actor, op, data, prev, hash, mac string
}

// rawDB opens the file behind the ledger's back, as a script would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return raw
}

func readRaw(t *testing.T, raw *sql.DB) []rawEvent {
	t.Helper()
	rows, err := raw.Query(`SELECT seq, at, type, actor, operation_id, data, prev_hash, hash, mac FROM audit_events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []rawEvent
	for rows.Next() {
		var e rawEvent
		if err := rows.Scan(&e.seq, &e.at, &e.typ, &e.actor, &e.op, &e.data, &e.prev, &e.hash, &e.mac); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// rechain is the attack script: it rewrites the audit table from evs,
// renumbering and re-hashing every link with plain SHA-256 exactly as the
// ledger does. A row whose hash did not change keeps its MAC; for the others
// mac decides (nil keeps the row's old MAC).
func rechain(t *testing.T, raw *sql.DB, evs []rawEvent, mac func(old rawEvent, hash string) string) (firstChanged int64) {
	t.Helper()
	before := map[int64]string{}
	for _, e := range readRaw(t, raw) {
		before[e.seq] = e.hash
	}
	tx, err := raw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`DELETE FROM audit_events`); err != nil {
		t.Fatal(err)
	}
	prev := genesisHash
	for i, e := range evs {
		e.seq = int64(i + 1)
		e.prev = prev
		e.hash = chainHash(prev, e.seq, time.Unix(0, e.at).UTC(), e.typ, e.actor, e.op, []byte(e.data))
		if before[e.seq] != e.hash {
			if firstChanged == 0 {
				firstChanged = e.seq
			}
			if mac != nil {
				e.mac = mac(e, e.hash)
			}
		}
		if _, err := tx.Exec(`INSERT INTO audit_events (seq, at, type, actor, operation_id, data, prev_hash, hash, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			e.seq, e.at, e.typ, e.actor, e.op, e.data, e.prev, e.hash, e.mac); err != nil {
			t.Fatal(err)
		}
		prev = e.hash
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return firstChanged
}

// approvedChargeChain builds the story the attack rewrites: a 99.00
// registration approved by two voters and settled, then more activity.
func approvedChargeChain(t *testing.T, db *DB) (opID string) {
	t.Helper()
	ctx := context.Background()
	setBudget(t, db, GlobalScope, WindowMonth, "500")
	op := reserveOK(t, db, "web-bot", "web", "register_domain", "99")
	if err := db.Append(ctx,
		NewEvent("approval.requested", ActorSystem, op.ID, map[string]any{"request_id": "apr_1", "amount": "99.00 USD"}),
		NewEvent("approval.voted", "slack:U0ALICE", op.ID, map[string]any{"request_id": "apr_1", "outcome": "approve", "approver": "alice"}),
		NewEvent("approval.voted", "slack:U0CAROL", op.ID, map[string]any{"request_id": "apr_1", "outcome": "approve", "approver": "carol"}),
	); err != nil {
		t.Fatal(err)
	}
	settleOK(t, db, op.ID, "99")
	later := reserveOK(t, db, "web-bot", "web", "register_domain", "5")
	settleOK(t, db, later.ID, "5")
	return op.ID
}

// forgeCharge is what the script does to the story: 99.00 becomes 9.00 in the
// money tables and the audit, and the approval votes disappear.
func forgeCharge(t *testing.T, raw *sql.DB, opID string) []rawEvent {
	t.Helper()
	if _, err := raw.Exec(`UPDATE charges SET amount_micros = 9000000 WHERE operation_id = ?`, opID); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE operations SET charged_micros = 9000000 WHERE id = ?`, opID); err != nil {
		t.Fatal(err)
	}
	var out []rawEvent
	edited := false
	for _, e := range readRaw(t, raw) {
		if e.typ == "approval.voted" {
			continue
		}
		if e.op == opID && e.typ == EventBudgetSettled {
			e.data = strings.NewReplacer(`"99.00"`, `"9.00"`, `99000000`, `9000000`).Replace(e.data)
			edited = true
		}
		out = append(out, e)
	}
	if !edited {
		t.Fatal("no budget.settled event to edit")
	}
	return out
}

func TestAttackRechainedDatabaseFailsVerify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wrongKey, err := GenerateAuditKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mac  func(old rawEvent, hash string) string
	}{
		{"plain sha256, old MACs left in place", nil},
		{"plain sha256, MACs cleared", func(rawEvent, string) string { return "" }},
		{"plain sha256, MACs made up", func(rawEvent, string) string { return strings.Repeat("ab", 32) }},
		{"keyed with a wrong key", func(_ rawEvent, hash string) string { return wrongKey.eventMAC(hash) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := openTest(t)
			opID := approvedChargeChain(t, db)
			if rep, err := db.Verify(ctx); err != nil || !rep.OK {
				t.Fatalf("before the attack: %+v %v", rep, err)
			}
			raw := rawDB(t, db.Path())
			firstBad := rechain(t, raw, forgeCharge(t, raw, opID), tt.mac)
			if firstBad == 0 {
				t.Fatal("the attack changed nothing")
			}
			rep, err := db.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK || rep.BrokenSeq != firstBad || rep.Checked != firstBad-1 || !strings.Contains(rep.Reason, "MAC") {
				t.Fatalf("Verify = %+v, want broken at the first rewritten event %d", rep, firstBad)
			}
			// Nothing signs the forged chain.
			var broken *ChainBrokenError
			if _, err := db.Head(ctx); !errors.As(err, &broken) || broken.Report.BrokenSeq != firstBad {
				t.Fatalf("Head of a forged chain: %v", err)
			}
			if err := db.ExportBundle(ctx, &bytes.Buffer{}, time.Time{}); !errors.As(err, &broken) {
				t.Fatalf("ExportBundle of a forged chain: %v", err)
			}
			if _, _, err := db.Checkpoint(ctx, CheckpointPolicy{Events: 1}); !errors.As(err, &broken) || broken.Report.BrokenSeq != firstBad {
				t.Fatalf("Checkpoint of a forged chain: %v", err)
			}
		})
	}

	// The same attack also replacing the key record with the attacker's own
	// key: every tollgate with the real key refuses the database, naming both.
	t.Run("key record replaced", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "t.db")
		db := openAt(t, path)
		opID := approvedChargeChain(t, db)
		raw := rawDB(t, path)
		rechain(t, raw, forgeCharge(t, raw, opID), func(_ rawEvent, hash string) string { return wrongKey.eventMAC(hash) })
		now := time.Now().UTC()
		if _, err := raw.Exec(`UPDATE audit_keys SET key_id = ?, public_key = ?, at = ?, signature = ?`, wrongKey.id, wrongKey.PublicKeyText(), now.UnixNano(),
			wrongKey.sign(signedMessage("boundary", wrongKey.id, 0, genesisHash, now))); err != nil {
			t.Fatal(err)
		}
		rep, err := db.Verify(ctx)
		if err != nil || rep.OK || !strings.Contains(rep.Reason, wrongKey.id) || !strings.Contains(rep.Reason, testKey.id) {
			t.Fatalf("Verify = %+v %v, want the replaced key record named", rep, err)
		}
		_, err = Open(ctx, path, WithLogger(quietLog), WithAuditKey(testKey))
		var mm *KeyMismatchError
		if !errors.As(err, &mm) || !strings.Contains(err.Error(), wrongKey.id) || !strings.Contains(err.Error(), testKey.id) {
			t.Fatalf("Open with the real key: %v", err)
		}
	})
}

func TestAttackTruncatedTailDetectedByAnchor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := chainOf(t)
	anchor, err := db.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := anchor.Check(testKey.PublicKey()); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := db.Append(ctx, NewEvent("test.after_anchor", "system", "", map[string]any{"i": i})); err != nil {
			t.Fatal(err)
		}
	}
	a := Anchor{Source: "anchor.json", Head: anchor}
	if rep, err := db.Verify(ctx, a); err != nil || !rep.OK || rep.Heads < 2 {
		t.Fatalf("intact chain with its anchor: %+v %v", rep, err)
	}
	// Drop the newest events, two of them at or before the anchor. Without
	// anything saved outside the database the rest still links up...
	sqlite3CLI(t, db.Path(), fmt.Sprintf(`DELETE FROM audit_events WHERE seq >= %d`, anchor.Seq-1))
	if rep, err := db.Verify(ctx); err != nil || !rep.OK {
		t.Fatalf("a truncated tail is invisible without an anchor; Verify = %+v %v", rep, err)
	}
	// ...the anchor names the first missing event.
	rep, err := db.Verify(ctx, a)
	if err != nil || rep.OK || rep.BrokenSeq != anchor.Seq-1 || !strings.Contains(rep.Reason, "missing") || !strings.Contains(rep.Reason, "anchor.json") {
		t.Fatalf("Verify with the anchor = %+v %v, want events from %d missing", rep, err, anchor.Seq-1)
	}
	// A checkpoint the server recorded catches it too while its row is there.
	db2 := chainOf(t)
	if _, created, err := db2.Checkpoint(ctx, CheckpointPolicy{Events: 1}); err != nil || !created {
		t.Fatalf("checkpoint: %v %v", created, err)
	}
	sqlite3CLI(t, db2.Path(), `DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)`)
	if rep, err := db2.Verify(ctx); err != nil || rep.OK || !strings.Contains(rep.Reason, "missing") {
		t.Fatalf("Verify with a checkpoint beyond the chain = %+v %v", rep, err)
	}
}

func TestAttackForgedAnchorSignature(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := chainOf(t)
	head, err := db.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateAuditKey()
	if err != nil {
		t.Fatal(err)
	}
	// The tamperer truncates the chain and wants an anchor that agrees.
	sqlite3CLI(t, db.Path(), fmt.Sprintf(`DELETE FROM audit_events WHERE seq > %d`, head.Seq-3))
	var tip rawEvent
	for _, e := range readRaw(t, rawDB(t, db.Path())) {
		tip = e
	}
	tests := []struct {
		name   string
		anchor func() SignedHead
		want   string
	}{
		{"seq and hash moved to the truncated head", func() SignedHead {
			h := head
			h.Seq, h.Hash = tip.seq, tip.hash
			return h
		}, "does not verify"},
		{"time changed", func() SignedHead {
			h := head
			h.At = h.At.Add(time.Second)
			return h
		}, "does not verify"},
		{"signed by another key", func() SignedHead { return other.signHead(tip.seq, tip.hash, time.Now()) }, "not by this chain's key " + testKey.id},
		{"another key's signature under this key's id", func() SignedHead {
			h := other.signHead(tip.seq, tip.hash, time.Now())
			h.KeyID = testKey.id
			return h
		}, "does not verify"},
		{"signature cut", func() SignedHead {
			h := head
			h.Signature = h.Signature[:20]
			return h
		}, "does not verify"},
		{"bad hash", func() SignedHead {
			h := head
			h.Hash = "zz"
			return h
		}, "hex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rep, err := db.Verify(ctx, Anchor{Source: "forged.json", Head: tt.anchor()})
			if err != nil || rep.OK || !strings.Contains(rep.Reason, "forged.json") || !strings.Contains(rep.Reason, tt.want) {
				t.Fatalf("Verify = %+v %v, want the anchor refused (%s)", rep, err, tt.want)
			}
		})
	}
}

func TestAuditKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "audit.key")
	k, err := LoadOrCreateAuditKey(path)
	if err != nil || !k.Created() || k.Path() != path {
		t.Fatalf("create: %+v %v", k, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created key file mode %v %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Fatalf("created key folder mode %v", di.Mode())
	}
	again, err := LoadOrCreateAuditKey(path)
	if err != nil || again.Created() || again.ID() != k.ID() {
		t.Fatalf("reload: %+v %v", again, err)
	}
	if got, err := ParsePublicKey(k.PublicKeyText()); err != nil || !got.Equal(k.PublicKey()) || KeyIDOf(got) != k.ID() {
		t.Fatalf("public key round trip: %v", err)
	}

	// Processes creating the key at once all end up with one key.
	racePath := filepath.Join(dir, "race", "audit.key")
	var wg sync.WaitGroup
	keys := make([]*AuditKey, 8)
	errs := make([]error, 8)
	for i := range keys {
		wg.Go(func() { keys[i], errs[i] = LoadOrCreateAuditKey(racePath) })
	}
	wg.Wait()
	created := 0
	for i, k := range keys {
		if errs[i] != nil || k.ID() != keys[0].ID() {
			t.Fatalf("racer %d: %v %v", i, k, errs[i])
		}
		if k.Created() {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d racers say they created the key", created)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "race", ".audit-key-*")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func TestAuditKeyFileRefused(t *testing.T) {
	t.Parallel()
	good, err := os.ReadFile(func() string {
		p := filepath.Join(t.TempDir(), "k")
		if _, err := LoadOrCreateAuditKey(p); err != nil {
			t.Fatal(err)
		}
		return p
	}())
	if err != nil {
		t.Fatal(err)
	}
	write := func(t *testing.T, body []byte, mode fs.FileMode) string {
		p := filepath.Join(t.TempDir(), "audit.key")
		if err := os.WriteFile(p, body, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		path func(t *testing.T) string
		want string // "" = accepted
	}{
		{"0600", func(t *testing.T) string { return write(t, good, 0o600) }, ""},
		{"0400", func(t *testing.T) string { return write(t, good, 0o400) }, ""},
		{"world-readable 0644", func(t *testing.T) string { return write(t, good, 0o644) }, "mode 0644"},
		{"group-readable 0640", func(t *testing.T) string { return write(t, good, 0o640) }, "mode 0640"},
		{"group-writable 0620", func(t *testing.T) string { return write(t, good, 0o620) }, "mode 0620"},
		{"world-writable 0602", func(t *testing.T) string { return write(t, good, 0o602) }, "chmod 600"},
		{"directory", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "d")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return p
		}, "not a regular file (it is a directory)"},
		{"named pipe", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "fifo")
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Skip("mkfifo:", err)
			}
			return p
		}, "named pipe"},
		{"symlink to a good key", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(write(t, good, 0o600), p); err != nil {
				t.Fatal(err)
			}
			return p
		}, ""},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, "does not exist"},
		{"empty", func(t *testing.T) string { return write(t, nil, 0o600) }, "no key line"},
		{"not a key", func(t *testing.T) string { return write(t, []byte("hello world\n"), 0o600) }, "not a tollgate audit key"},
		{"short key", func(t *testing.T) string { return write(t, []byte(auditKeyHeader+" AAAA\n"), 0o600) }, "32 bytes"},
		{"two keys", func(t *testing.T) string { return write(t, append(append([]byte{}, good...), good...), 0o600) }, "more than one key line"},
		{"huge", func(t *testing.T) string { return write(t, bytes.Repeat([]byte("#"), 10000), 0o600) }, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := tt.path(t)
			k, err := LoadAuditKey(path)
			if tt.want == "" {
				if err != nil || k.ID() == "" {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("LoadAuditKey = %v, want an error naming %s and %q", err, path, tt.want)
			}
			// LoadOrCreate never replaces or repairs a refused file.
			if tt.name != "missing" {
				if _, err := LoadOrCreateAuditKey(path); err == nil {
					t.Fatal("LoadOrCreateAuditKey accepted it")
				}
			}
		})
	}
}

func TestAuditKeyMismatchAndMissingKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "t.db")
	keyFile := filepath.Join(dir, "a.key")
	ka, err := LoadOrCreateAuditKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	// A process without a key opened before the chain was keyed.
	early := openAt(t, path, withoutKey())
	keyed := openAt(t, path, WithAuditKey(ka))
	if err := keyed.Append(ctx, NewEvent("test.keyed", "system", "", nil)); err != nil {
		t.Fatal(err)
	}

	otherFile := filepath.Join(dir, "b.key")
	kb, err := LoadOrCreateAuditKey(otherFile)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, path, WithLogger(quietLog), WithAuditKey(kb))
	var mm *KeyMismatchError
	if !errors.As(err, &mm) || mm.Recorded != ka.ID() || mm.KeyID != kb.ID() {
		t.Fatalf("Open with another key: %v", err)
	}
	for _, want := range []string{ka.ID(), kb.ID(), otherFile, path, "same key file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("mismatch error lacks %q: %v", want, err)
		}
	}

	var kr *KeyRequiredError
	if err := early.Append(ctx, NewEvent("test.unkeyed", "system", "", nil)); !errors.As(err, &kr) || kr.KeyID != ka.ID() {
		t.Fatalf("append without the key to a keyed chain: %v", err)
	}
	late := openAt(t, path, withoutKey())
	if err := late.Append(ctx, NewEvent("test.unkeyed", "system", "", nil)); !errors.As(err, &kr) || !strings.Contains(err.Error(), "--audit-key") {
		t.Fatalf("append without the key: %v", err)
	}
	if _, err := late.Verify(ctx); !errors.As(err, &kr) {
		t.Fatalf("verify without the key: %v", err)
	}
	// Reading needs no key.
	n := 0
	if err := late.Events(ctx, EventQuery{}, func(Event) error { n++; return nil }); err != nil || n == 0 {
		t.Fatalf("read without the key: %d %v", n, err)
	}
	if rep, err := keyed.Verify(ctx); err != nil || !rep.OK || rep.KeyID != ka.ID() {
		t.Fatalf("refused appends left a trace: %+v %v", rep, err)
	}
}

// TestAuditKeyTwoWritersInterleave: two handles on one file (what two
// processes are) with the same key append and spend at once; the chain is
// one line, every event keyed.
func TestAuditKeyTwoWritersInterleave(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "t.db")
	keyFile := filepath.Join(dir, "audit.key")
	k1, err := LoadOrCreateAuditKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadAuditKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	dbs := []*DB{openAt(t, path, WithAuditKey(k1)), openAt(t, path, WithAuditKey(k2))}
	setBudget(t, dbs[0], GlobalScope, WindowMonth, "1000")
	const perWriter = 20
	var wg sync.WaitGroup
	errs := make(chan error, 4*perWriter)
	for w := range 4 {
		db := dbs[w%2]
		wg.Go(func() {
			for i := range perWriter {
				if err := db.Append(ctx, NewEvent("test.writer", "system", "", map[string]any{"w": w, "i": i})); err != nil {
					errs <- err
				}
				if i%5 == 0 {
					op, err := pipelineOp(ctx, db, fmt.Sprintf("a%d", w), "t", "register_domain", usd("1"))
					if err == nil {
						err = execute(ctx, db, op.ID, false)
					}
					if err == nil {
						_, err = db.Settle(ctx, op.ID, SettleRequest{Actual: usd("1")})
					}
					if err != nil {
						errs <- err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, db := range dbs {
		rep, err := db.Verify(ctx)
		if err != nil || !rep.OK || rep.KeyID != k1.ID() {
			t.Fatalf("writer %d verifies: %+v %v", i, rep, err)
		}
	}
	if n := countRows(t, dbs[0], `SELECT COUNT(*) FROM audit_events WHERE type = 'test.writer'`); n != 4*perWriter {
		t.Fatalf("%d writer events", n)
	}
	if n := countRows(t, dbs[0], `SELECT COUNT(*) FROM audit_events WHERE mac = ''`); n != 0 {
		t.Fatalf("%d events without a MAC", n)
	}
	mustInvariants(t, dbs[1], true)
}

// legacySchema builds a database as tollgate wrote it before the audit key:
// the first migration only, and events hashed with plain SHA-256.
func legacySchema(t *testing.T, path string, events int) {
	t.Helper()
	raw := rawDB(t, path)
	init, err := migrationFiles.ReadFile("migrations/sqlite/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE TABLE schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL DEFAULT '', applied_at INTEGER NOT NULL, PRIMARY KEY (component, version))`,
		string(init),
		`INSERT INTO schema_migrations VALUES ('ledger', 1, '0001_init.sql', 0)`,
	} {
		if _, err := raw.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	prev := genesisHash
	for i := 1; i <= events; i++ {
		at := nov22.Add(time.Duration(i) * time.Second)
		data := fmt.Sprintf(`{"i":%d}`, i)
		hash := chainHash(prev, int64(i), at, "test.legacy", "system", "", []byte(data))
		if _, err := raw.Exec(`INSERT INTO audit_events (seq, at, type, actor, operation_id, data, prev_hash, hash) VALUES (?, ?, 'test.legacy', 'system', '', ?, ?, ?)`,
			i, at.UnixNano(), data, prev, hash); err != nil {
			t.Fatal(err)
		}
		prev = hash
	}
	_ = raw.Close()
}

func TestAuditMigrationKeepsPlainHashesUpToASignedBoundary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("old schema, new key", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "old.db")
		legacySchema(t, path, 7)
		key, err := GenerateAuditKey()
		if err != nil {
			t.Fatal(err)
		}
		db := openAt(t, path, WithAuditKey(key))
		if err := db.Append(ctx, NewEvent("test.keyed", "system", "", nil), NewEvent("test.keyed", "system", "", nil)); err != nil {
			t.Fatal(err)
		}
		rep, err := db.Verify(ctx)
		if err != nil || !rep.OK || rep.Boundary != 7 || rep.Checked != 9 || rep.KeyID != key.ID() {
			t.Fatalf("Verify after the upgrade = %+v %v", rep, err)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE mac = ''`); n != 7 {
			t.Fatalf("%d plain events, want the 7 old ones", n)
		}
		var buf bytes.Buffer
		if err := db.ExportBundle(ctx, &buf, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if br, err := VerifyBundle(&buf, key.PublicKey()); err != nil || !br.OK || br.Checked != 9 {
			t.Fatalf("bundle of an upgraded chain: %+v %v", br, err)
		}

		raw := rawDB(t, path)
		// An old event edited in place is named exactly...
		if _, err := raw.Exec(`UPDATE audit_events SET data = '{"i":99}' WHERE seq = 3`); err != nil {
			t.Fatal(err)
		}
		if rep, _ := db.Verify(ctx); rep.OK || rep.BrokenSeq != 3 || !strings.Contains(rep.Reason, "content was edited") {
			t.Fatalf("edited old event: %+v", rep)
		}
		// ...and one edited and re-hashed breaks at the signed boundary.
		evs := readRaw(t, raw)
		rechain(t, raw, evs, nil)
		if rep, _ := db.Verify(ctx); rep.OK || rep.BrokenSeq != 7 || !strings.Contains(rep.Reason, "signed when the audit key was first used") {
			t.Fatalf("re-hashed old events: %+v", rep)
		}
	})

	t.Run("current code without a key, existing key file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		path := filepath.Join(dir, "t.db")
		plain := openAt(t, path, withoutKey())
		chainOfOn(t, plain)
		_ = plain.Close()
		keyFile := filepath.Join(dir, "audit.key")
		if _, err := LoadOrCreateAuditKey(keyFile); err != nil {
			t.Fatal(err)
		}
		existing, err := LoadAuditKey(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		// A key that was not just made does not adopt an unkeyed chain on its own:
		// that is also what a deleted key record looks like.
		_, err = Open(ctx, path, WithLogger(quietLog), WithAuditKey(existing))
		var uk *UnkeyedChainError
		if !errors.As(err, &uk) || !strings.Contains(err.Error(), "audit adopt-key") || !strings.Contains(err.Error(), keyFile) {
			t.Fatalf("Open with an existing key: %v", err)
		}
		db := openAt(t, path, WithAuditKey(existing), WithAuditKeyAdoption())
		rep, err := db.Verify(ctx)
		if err != nil || !rep.OK || rep.Boundary == 0 || rep.Boundary != rep.Checked {
			t.Fatalf("Verify after adoption = %+v %v", rep, err)
		}
	})

	t.Run("key record deleted", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "t.db")
		db := openAt(t, path)
		chainOfOn(t, db)
		sqlite3CLI(t, path, `DELETE FROM audit_keys`)
		if rep, err := db.Verify(ctx); err != nil || rep.OK || !strings.Contains(rep.Reason, "records no audit key") {
			t.Fatalf("Verify without the key record = %+v %v", rep, err)
		}
		// Even a fresh key and explicit adoption refuse a chain that carries MACs.
		_, err := Open(ctx, path, WithLogger(quietLog), WithAuditKey(testKey), WithAuditKeyAdoption())
		if err == nil || !strings.Contains(err.Error(), "key record was deleted") {
			t.Fatalf("Open after the key record was deleted: %v", err)
		}
	})
}

// chainOfOn is chainOf on an open ledger.
func chainOfOn(t *testing.T, db *DB) {
	t.Helper()
	setBudget(t, db, GlobalScope, WindowMonth, "100")
	op := reserveOK(t, db, "a", "t", "register_domain", "8.57")
	settleOK(t, db, op.ID, "8.57")
}

func TestAuditCheckpoints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(nov22)
	path := filepath.Join(t.TempDir(), "t.db")
	db := openAt(t, path, WithClock(clk.Now))
	other := openAt(t, path, WithClock(clk.Now))
	policy := CheckpointPolicy{Events: 5, Interval: 10 * time.Minute}
	appendN := func(n int) {
		t.Helper()
		for range n {
			if err := db.Append(ctx, NewEvent("test.event", "system", "", nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkpoint := func(db *DB) (SignedHead, bool) {
		t.Helper()
		h, created, err := db.Checkpoint(ctx, policy)
		if err != nil {
			t.Fatal(err)
		}
		return h, created
	}
	appendN(4)
	if _, created := checkpoint(db); created {
		t.Fatal("checkpoint after 4 of 5 events")
	}
	appendN(1)
	h, created := checkpoint(db)
	if !created || h.Seq != 5 || h.Check(testKey.PublicKey()) != nil {
		t.Fatalf("checkpoint after 5 events: %+v %v", h, created)
	}
	// Another process sees it is not due any more.
	if _, created := checkpoint(other); created {
		t.Fatal("second checkpoint of the same head")
	}
	appendN(1)
	if _, created := checkpoint(db); created {
		t.Fatal("checkpoint after 1 event and no time")
	}
	clk.Advance(10 * time.Minute)
	if h, created := checkpoint(other); !created || h.Seq != 6 {
		t.Fatalf("checkpoint after the interval: %+v %v", h, created)
	}
	clk.Advance(time.Hour)
	if _, created := checkpoint(db); created {
		t.Fatal("checkpoint with no new event")
	}
	if rep, err := db.Verify(ctx); err != nil || !rep.OK || rep.Heads != 3 {
		t.Fatalf("Verify with 3 checkpoints (the boundary, 5, 6) = %+v %v", rep, err)
	}

	// A forged checkpoint row is refused by verify and by the next checkpoint.
	forger, err := GenerateAuditKey()
	if err != nil {
		t.Fatal(err)
	}
	f := forger.signHead(6, strings.Repeat("0", 64), clk.Now())
	sqlite3CLI(t, path, fmt.Sprintf(`INSERT INTO audit_checkpoints VALUES (7, '%s', %d, '%s', '%s')`, f.Hash, f.At.UnixNano(), testKey.id, f.Signature))
	if rep, err := db.Verify(ctx); err != nil || rep.OK || !strings.Contains(rep.Reason, "forged row") {
		t.Fatalf("Verify with a forged checkpoint = %+v %v", rep, err)
	}
	appendN(5)
	var broken *ChainBrokenError
	if _, _, err := db.Checkpoint(ctx, policy); !errors.As(err, &broken) || !strings.Contains(err.Error(), "forged row") {
		t.Fatalf("Checkpoint over a forged row: %v", err)
	}
}

// TestBundleRoundTrip exports a keyed chain and checks it offline, pinned and
// not, whole and from a time on.
func TestBundleRoundTrip(t *testing.T) { t.Parallel(); eachBackend(t, testBundleRoundTrip) }

func testBundleRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(nov22)
	db := openTest(t, WithClock(clk.Now))
	approvedChargeChain(t, db)
	if _, created, err := db.Checkpoint(ctx, CheckpointPolicy{Events: 1}); err != nil || !created {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	mid := clk.Now()
	if err := db.Append(ctx, NewEvent("test.late", "cli:<alice>", "", map[string]any{"html": "<b>&amp;</b>", "line": "a\u2028b"})); err != nil {
		t.Fatal(err)
	}
	total := int64(countRows(t, db, `SELECT COUNT(*) FROM audit_events`))

	var whole bytes.Buffer
	if err := db.ExportBundle(ctx, &whole, time.Time{}); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyBundle(bytes.NewReader(whole.Bytes()), testKey.PublicKey())
	if err != nil || !rep.OK || !rep.Pinned || rep.Checked != total || rep.FromSeq != 1 || rep.HeadSeq != total || rep.Heads < 2 || rep.KeyID != testKey.id {
		t.Fatalf("whole bundle: %+v %v", rep, err)
	}
	if rep, err := VerifyBundle(bytes.NewReader(whole.Bytes()), nil); err != nil || !rep.OK || rep.Pinned {
		t.Fatalf("unpinned: %+v %v", rep, err)
	}
	var late bytes.Buffer
	if err := db.ExportBundle(ctx, &late, mid); err != nil {
		t.Fatal(err)
	}
	if rep, err := VerifyBundle(&late, testKey.PublicKey()); err != nil || !rep.OK || rep.Checked != 1 || rep.FromSeq != total {
		t.Fatalf("bundle since %s: %+v %v", mid, rep, err)
	}
	empty := openTest(t)
	var none bytes.Buffer
	if err := empty.ExportBundle(ctx, &none, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if rep, err := VerifyBundle(&none, testKey.PublicKey()); err != nil || !rep.OK || rep.Checked != 0 {
		t.Fatalf("empty bundle: %+v %v\n%s", rep, err, none.String())
	}
	keyless := openTest(t, withoutKey())
	if err := keyless.ExportBundle(ctx, &none, time.Time{}); err == nil {
		t.Fatal("a bundle without the key")
	}
}

// bundleLines splits a bundle into its decoded lines, to tamper with.
func bundleLines(t *testing.T, b []byte) []bundleLine {
	t.Helper()
	var out []bundleLine
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var bl bundleLine
		dec := json.NewDecoder(bytes.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&bl); err != nil {
			t.Fatal(err)
		}
		out = append(out, bl)
	}
	return out
}

func joinBundle(t *testing.T, lines []bundleLine) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func eventLines(lines []bundleLine) (first int) {
	for i, l := range lines {
		if l.Event != nil {
			return i
		}
	}
	return -1
}

// resign makes every signature of the bundle key's (an attacker's own key).
func resign(lines []bundleLine, k *AuditKey) {
	for i := range lines {
		switch l := &lines[i]; {
		case l.Header != nil:
			l.Header.KeyID, l.Header.PublicKey = k.id, k.PublicKeyText()
		case l.Checkpoint != nil:
			*l.Checkpoint = k.signHead(l.Checkpoint.Seq, l.Checkpoint.Hash, l.Checkpoint.At)
		case l.Event != nil:
			l.Event.Signature = k.sign(signedMessage("event", k.id, l.Event.Seq, l.Event.Hash, time.Time{}))
		case l.End != nil:
			l.End.Head = k.signHead(l.End.Head.Seq, l.End.Head.Hash, l.End.Head.At)
			l.End.Signature = k.sign(bundleEndMessage(k.id, l.End.FromSeq, l.End.Events, l.End.Head))
		}
	}
}

// rehash recomputes the plain hashes and links of every event from index i on.
func rehash(lines []bundleLine, i int) {
	prev := lines[i].Event.PrevHash
	if i > 0 && lines[i-1].Event != nil {
		prev = lines[i-1].Event.Hash
	}
	for ; i < len(lines) && lines[i].Event != nil; i++ {
		e := lines[i].Event
		e.PrevHash = prev
		e.Hash = chainHash(prev, e.Seq, e.At.UTC(), e.Type, e.Actor, e.OperationID, e.Data)
		prev = e.Hash
	}
}

func TestBundleTamperIsNamed(t *testing.T) { t.Parallel(); eachBackend(t, testBundleTamperIsNamed) }

func testBundleTamperIsNamed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	approvedChargeChain(t, db)
	if _, created, err := db.Checkpoint(ctx, CheckpointPolicy{Events: 1}); err != nil || !created {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := db.ExportBundle(ctx, &buf, time.Time{}); err != nil {
		t.Fatal(err)
	}
	original := buf.Bytes()
	attacker, err := GenerateAuditKey()
	if err != nil {
		t.Fatal(err)
	}
	const k = 6 // the event tampered with (seq)
	tests := []struct {
		name    string
		tamper  func(lines []bundleLine) []bundleLine
		wantSeq int64
		want    string
		raw     func(b []byte) []byte // tampers with the bytes instead
	}{
		{name: "data edited in place", tamper: func(ls []bundleLine) []bundleLine {
			ls[eventLines(ls)+k-1].Event.Data = []byte(`{"actual_text":"9.00"}`)
			return ls
		}, wantSeq: k, want: "content was edited"},
		{name: "data edited and the chain re-hashed", tamper: func(ls []bundleLine) []bundleLine {
			i := eventLines(ls) + k - 1
			ls[i].Event.Data = []byte(`{"actual_text":"9.00"}`)
			rehash(ls, i)
			return ls
		}, wantSeq: k, want: "signature does not verify"},
		{name: "event dropped", tamper: func(ls []bundleLine) []bundleLine {
			i := eventLines(ls) + k - 1
			return append(ls[:i], ls[i+1:]...)
		}, wantSeq: k, want: "missing"},
		{name: "event dropped and the rest renumbered and re-hashed", tamper: func(ls []bundleLine) []bundleLine {
			i := eventLines(ls) + k - 1
			ls = append(ls[:i], ls[i+1:]...)
			for j := i; ls[j].Event != nil; j++ {
				ls[j].Event.Seq--
			}
			rehash(ls, i)
			return ls
		}, wantSeq: k, want: "signature does not verify"},
		{name: "newest events cut, end kept", tamper: func(ls []bundleLine) []bundleLine {
			n := len(ls)
			return append(ls[:n-3], ls[n-1])
		}, want: "newest events were removed"},
		{name: "end cut", tamper: func(ls []bundleLine) []bundleLine { return ls[:len(ls)-1] }, want: "cut short"},
		{name: "first events cut, with the checkpoints", tamper: func(ls []bundleLine) []bundleLine {
			i := eventLines(ls)
			return append(ls[:1], ls[i+2:]...)
		}, want: "missing from the start"},
		{name: "first events cut, checkpoints kept", tamper: func(ls []bundleLine) []bundleLine {
			i := eventLines(ls)
			return append(ls[:i], ls[i+2:]...)
		}, want: "lies before the bundle's first event"},
		{name: "checkpoint hash changed", tamper: func(ls []bundleLine) []bundleLine {
			ls[1].Checkpoint.Hash = strings.Repeat("1", 64)
			return ls
		}, want: "checkpoint"},
		{name: "re-signed by another key, pinned", tamper: func(ls []bundleLine) []bundleLine {
			i := eventLines(ls) + k - 1
			ls[i].Event.Data = []byte(`{"actual_text":"9.00"}`)
			rehash(ls, i)
			resign(ls, attacker)
			return ls
		}, want: "not by the pinned key " + testKey.id},
		{name: "trailing data", raw: func(b []byte) []byte { return append(append([]byte{}, b...), []byte(`{"event":{}}`+"\n")...) }, want: "after the bundle's signed end"},
		{name: "not JSON", raw: func(b []byte) []byte { return []byte("hello") }, want: "header"},
		{name: "truncated mid-line", raw: func(b []byte) []byte { return b[:len(b)/2] }, want: "not a valid bundle line"},
		{name: "unknown field", raw: func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"event":{`), []byte(`"event":{"extra":1,`), 1)
		}, want: "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b []byte
			if tt.raw != nil {
				b = tt.raw(original)
			} else {
				b = joinBundle(t, tt.tamper(bundleLines(t, original)))
			}
			rep, err := VerifyBundle(bytes.NewReader(b), testKey.PublicKey())
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK || !strings.Contains(rep.Reason, tt.want) || (tt.wantSeq != 0 && rep.BrokenSeq != tt.wantSeq) {
				t.Fatalf("VerifyBundle = %+v, want %q at event %d", rep, tt.want, tt.wantSeq)
			}
		})
	}
	// Unpinned, a bundle re-signed by its forger verifies but says whose it is.
	ls := bundleLines(t, original)
	resign(ls, attacker)
	rep, err := VerifyBundle(bytes.NewReader(joinBundle(t, ls)), nil)
	if err != nil || !rep.OK || rep.Pinned || rep.KeyID != attacker.id {
		t.Fatalf("unpinned forgery: %+v %v", rep, err)
	}
}

func FuzzVerifyBundle(f *testing.F) {
	db := openTest(f)
	ctx := context.Background()
	for i := range 3 {
		if err := db.Append(ctx, NewEvent("test.fuzz", "system", "", map[string]any{"i": i})); err != nil {
			f.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := db.ExportBundle(ctx, &buf, time.Time{}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(""))
	f.Add([]byte("{}\n{}"))
	f.Add([]byte(`{"header":{"format":"tollgate-audit-bundle","version":1}}`))
	f.Add(bytes.Repeat([]byte(`{"event":{"seq":1}}`+"\n"), 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := VerifyBundle(bytes.NewReader(b), testKey.PublicKey())
		if err != nil {
			t.Fatalf("error from an in-memory reader: %v", err)
		}
		if rep.OK == (rep.Reason != "") {
			t.Fatalf("OK and reason disagree: %+v", rep)
		}
		if rep.OK && !bytes.Equal(b, buf.Bytes()) {
			// Anything else that verifies must carry the same events.
			if rep.Checked > 3 || !rep.Pinned {
				t.Fatalf("a different bundle verified: %+v", rep)
			}
		}
	})
}

func FuzzReadHeads(f *testing.F) {
	h := testKey.signHead(3, strings.Repeat("a", 64), nov22)
	b, _ := json.Marshal(h)
	f.Add(b)
	f.Add(append(append(b, '\n'), b...))
	f.Add([]byte(`{"seq":-1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		heads, err := ReadHeads(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, h := range heads {
			if h.wellFormed() != nil {
				t.Fatalf("accepted a malformed head %+v", h)
			}
		}
	})
}

func FuzzParseAuditKeyFile(f *testing.F) {
	f.Add([]byte(auditKeyHeader + " " + strings.Repeat("A", 43) + "\n"))
	f.Add([]byte("# c\n\n" + auditKeyHeader + " " + strings.Repeat("A", 43)))
	f.Add([]byte(auditKeyHeader))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		secret, err := parseAuditKeyFile(b)
		if err == nil && len(secret) != auditKeySize {
			t.Fatalf("accepted a %d-byte key", len(secret))
		}
	})
}
