package approvals_test

import (
	"context"
	"io/fs"
	"log/slog"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/approvalstest"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// TestMigrationMovesSlackStateToPosts: a database written before channels
// stood beside the core keeps its Slack messages (a pending request is updated
// in place, not posted again) and its votes.
func TestMigrationMovesSlackStateToPosts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	old := fstest.MapFS{}
	for _, name := range []string{"sqlite/0001_approvals.sql", "sqlite/0002_approvers.sql"} {
		b, err := fs.ReadFile(approvals.Migrations.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		old[name] = &fstest.MapFile{Data: b}
	}
	st, err := store.Open(ctx, path, store.WithMigrations(store.Migrations{Component: "approvals", FS: old}), store.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO approval_requests (id, operation_id, tool, agent, amount_micros, currency, args_hash, quorum, state, created_at, expires_at, version, slack_channel, slack_ts, slack_synced)
			VALUES ('apr_posted', 'op_1', 'register_domain', 'web-bot', 1, 'USD', 'h', 1, 'pending', 1, 2, 3, 'C0APPROVALS', '1790000000.000001', 2)`,
		`INSERT INTO approval_requests (id, operation_id, tool, agent, amount_micros, currency, args_hash, quorum, state, created_at, expires_at, version)
			VALUES ('apr_unposted', 'op_2', 'register_domain', 'web-bot', 1, 'USD', 'h', 1, 'pending', 1, 2, 1)`,
		`INSERT INTO approval_requests (id, operation_id, tool, agent, amount_micros, currency, args_hash, quorum, state, created_at, expires_at, version)
			VALUES ('apr_old', 'op_3', 'register_domain', 'web-bot', 1, 'USD', 'h', 1, 'expired', 1, 2, 2)`,
		`INSERT INTO approval_votes (request_id, approver, slack_user_id, via, outcome, at) VALUES ('apr_posted', 'alice', 'U0ALICE', 'slack', 'approve', 5)`,
		`INSERT INTO approval_votes (request_id, approver, slack_user_id, via, outcome, at) VALUES ('apr_posted', 'bob', 'U0BOB', 'cli', 'approve', 6)`,
	} {
		if _, err := st.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = approvalstest.OpenHandle(t, path)
	type post struct {
		ref             string
		version, synced int64
	}
	got := map[string]post{}
	rows, err := st.QueryContext(ctx, `SELECT request_id, ref, version, synced FROM approval_posts WHERE channel = 'slack'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var p post
		if err := rows.Scan(&id, &p.ref, &p.version, &p.synced); err != nil {
			t.Fatal(err)
		}
		got[id] = p
	}
	rows.Close()
	want := map[string]post{
		"apr_posted":   {"C0APPROVALS 1790000000.000001", 3, 2},
		"apr_unposted": {"", 1, 0},
	}
	if len(got) != len(want) || got["apr_posted"] != want["apr_posted"] || got["apr_unposted"] != want["apr_unposted"] {
		t.Fatalf("posts after migration %+v, want %+v", got, want)
	}
	svc, err := approvals.NewService(st, approvals.Options{Authorizer: approvalstest.PolicyAuthorizer(nil), Audit: (&approvalstest.AuditLog{DB: st}).Fn})
	if err != nil {
		t.Fatal(err)
	}
	r, err := svc.Get(ctx, "apr_posted")
	if err != nil {
		t.Fatal(err)
	}
	votes := r.Votes
	if len(votes) != 2 || votes[0].User != "U0ALICE" || votes[1].User != "" || votes[1].Via != approvals.ViaCLI {
		t.Fatalf("votes after migration %+v", votes)
	}
	if _, err := st.ExecContext(ctx, `INSERT INTO approval_votes (request_id, approver, via, outcome, at) VALUES ('apr_unposted', 'carol', 'web', 'deny', 7)`); err != nil {
		t.Fatalf("a web vote is refused by the schema: %v", err)
	}
}

// TestMigrationsShipBothDialects: every approvals schema version exists for
// SQLite and PostgreSQL under the same name.
func TestMigrationsShipBothDialects(t *testing.T) {
	t.Parallel()
	if err := approvals.Migrations.CheckDialects(); err != nil {
		t.Fatal(err)
	}
}
