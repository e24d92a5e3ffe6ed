package server

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/ledger"
)

// TestAuditCheckpointsGoToFileAndSlack: every N events the server signs the
// head, appends it to the checkpoint file (0600) and posts it to Slack; the
// file then anchors `audit verify`. A chain edited behind the server's back
// is alerted once and never signed.
func TestAuditCheckpointsGoToFileAndSlack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "audit", "checkpoints.jsonl")
	e, sl := newSlackEnv(t, withConfig(func(c *Config) {
		c.Audit.CheckpointEvents = 3
		c.Audit.CheckpointInterval = 0
		c.Audit.CheckpointFile = file
	}))
	// Start wrote events already (approvers published, …); make sure of 3.
	for range 3 {
		if err := e.db.Append(ctx, ledger.NewEvent("test.event", "system", "", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if !e.srv.audit.run(ctx) {
		t.Fatal("no checkpoint after 3 events")
	}
	if e.srv.audit.run(ctx) {
		t.Fatal("a second checkpoint with no new event")
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("checkpoint file: %v %v", fi, err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	heads, err := ledger.ReadHeads(f)
	_ = f.Close()
	if err != nil || len(heads) != 1 {
		t.Fatalf("checkpoint file holds %d heads: %v", len(heads), err)
	}
	h := heads[0]
	if err := h.Check(testAuditKey.PublicKey()); err != nil {
		t.Fatal(err)
	}
	msg := sl.rec.waitFor(t, "chat.postMessage", "the checkpoint message", func(c slackAPICall) bool {
		return strings.Contains(c.Fields["text"], "Audit checkpoint")
	})
	if !strings.Contains(msg.Fields["text"], h.Hash[:16]) || !strings.Contains(msg.Fields["text"], fmt.Sprintf("event %d,", h.Seq)) {
		t.Fatalf("checkpoint message %q lacks seq %d and hash prefix %s", msg.Fields["text"], h.Seq, h.Hash[:16])
	}
	if rep, err := e.db.Verify(ctx, ledger.Anchor{Source: file, Head: h}); err != nil || !rep.OK {
		t.Fatalf("verify against the checkpoint file: %+v %v", rep, err)
	}

	// Someone edits an event behind the server's back.
	raw, err := sql.Open("sqlite", e.cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.ExecContext(ctx, `UPDATE audit_events SET data = '{"forged":true}' WHERE seq = ?`, h.Seq); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := e.db.Append(ctx, ledger.NewEvent("test.event", "system", "", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if e.srv.audit.run(ctx) || e.srv.audit.run(ctx) {
		t.Fatal("a tampered chain was signed")
	}
	alerts := 0
	for _, c := range sl.rec.byMethod("chat.postMessage") {
		if strings.Contains(c.Fields["text"], "does not verify") {
			alerts++
		}
	}
	if alerts != 1 {
		t.Fatalf("%d alerts for the broken chain, want exactly 1", alerts)
	}
	if b, _ := os.ReadFile(file); strings.Count(string(b), "\n") != 1 {
		t.Fatalf("the checkpoint file grew after the chain broke:\n%s", b)
	}
}
