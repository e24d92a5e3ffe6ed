package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// sqlite3CLI edits the file with the real sqlite3 shell, as a tamperer would.
func sqlite3CLI(t *testing.T, path, stmt string) {
	t.Helper()
	bin, err := exec.LookPath("sqlite3")
	if err != nil {
		const how = "no sqlite3 shell: run go tool task setup:sqlite3 as root (apt-get install -y sqlite3)"
		if os.Getenv("CI") == "true" {
			t.Fatal(how)
		}
		t.Skip(how)
	}
	out, err := exec.Command(bin, path, stmt).CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3 %q: %v: %s", stmt, err, out)
	}
}

// chainOf builds a ledger with a realistic chain of at least 10 events.
func chainOf(t *testing.T) *DB {
	t.Helper()
	db := openTest(t)
	setBudget(t, db, GlobalScope, WindowMonth, "100")
	op := reserveOK(t, db, "a", "t", "register_domain", "8.57")
	settleOK(t, db, op.ID, "8.57")
	if _, err := db.Freeze(context.Background(), AgentScope("b"), "test", "cli:alice"); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestAuditVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name       string
		tamper     func(t *testing.T, db *DB)
		wantSeq    int64
		wantReason string
	}{
		{"edited data (sqlite3)", func(t *testing.T, db *DB) {
			sqlite3CLI(t, db.Path(), `UPDATE audit_events SET data = '{"amount":"0.01"}' WHERE seq = 5`)
		}, 5, "content was edited"},
		{"edited actor (sqlite3)", func(t *testing.T, db *DB) {
			sqlite3CLI(t, db.Path(), `UPDATE audit_events SET actor = 'slack:UEVIL' WHERE seq = 7`)
		}, 7, "content was edited"},
		{"edited time (sqlite3)", func(t *testing.T, db *DB) {
			sqlite3CLI(t, db.Path(), `UPDATE audit_events SET at = at + 1 WHERE seq = 3`)
		}, 3, "content was edited"},
		{"deleted row (sqlite3)", func(t *testing.T, db *DB) {
			sqlite3CLI(t, db.Path(), `DELETE FROM audit_events WHERE seq = 4`)
		}, 4, "missing"},
		{"reordered rows (sqlite3)", func(t *testing.T, db *DB) {
			sqlite3CLI(t, db.Path(), `UPDATE audit_events SET data = CASE seq WHEN 6 THEN (SELECT data FROM audit_events WHERE seq = 8)
				ELSE (SELECT data FROM audit_events WHERE seq = 6) END WHERE seq IN (6, 8)`)
		}, 6, "content was edited"},
		{"edited and rehashed", func(t *testing.T, db *DB) {
			// A tamperer who recomputes the edited row's hash cannot recompute
			// its MAC without the key file.
			var at int64
			var typ, actor, opID, prev string
			if err := db.st.QueryRowContext(ctx, `SELECT at, type, actor, operation_id, prev_hash FROM audit_events WHERE seq = 5`).Scan(&at, &typ, &actor, &opID, &prev); err != nil {
				t.Fatal(err)
			}
			forged := chainHash(prev, 5, time.Unix(0, at).UTC(), typ, actor, opID, []byte(`{"forged":true}`))
			sqlite3CLI(t, db.Path(), fmt.Sprintf(`UPDATE audit_events SET data = '{"forged":true}', hash = '%s' WHERE seq = 5`, forged))
		}, 5, "does not carry the audit key's MAC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := chainOf(t)
			total := int64(countRows(t, db, `SELECT COUNT(*) FROM audit_events`))
			rep, err := db.Verify(ctx)
			if err != nil || !rep.OK || rep.Checked != total || total < 10 {
				t.Fatalf("before tampering: %+v %v (total %d)", rep, err, total)
			}
			tt.tamper(t, db)
			rep, err = db.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK || rep.BrokenSeq != tt.wantSeq || !strings.Contains(rep.Reason, tt.wantReason) || rep.Checked != tt.wantSeq-1 {
				t.Fatalf("Verify = %+v, want broken at %d (%s)", rep, tt.wantSeq, tt.wantReason)
			}
		})
	}
}

func TestAppendTxWithOwnTable(t *testing.T) { t.Parallel(); eachBackend(t, testAppendTxWithOwnTable) }

func testAppendTxWithOwnTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	approvals := fstest.MapFS{
		"sqlite/0001_requests.sql":   {Data: []byte(`CREATE TABLE approval_requests (id TEXT PRIMARY KEY, state TEXT NOT NULL);`)},
		"postgres/0001_requests.sql": {Data: []byte(`CREATE TABLE approval_requests (id TEXT PRIMARY KEY, state TEXT NOT NULL);`)},
	}
	db := openTest(t, WithMigrations(store.Migrations{Component: "approvals", FS: approvals}))
	op := reserveOK(t, db, "a", "t", "register_domain", "1")

	// The approvals package writes its row and its event in one transaction.
	err := db.Store().Write(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO approval_requests (id, state) VALUES ('apr_1', 'pending')`); err != nil {
			return err
		}
		return db.AppendTx(ctx, tx, NewEvent("approval.requested", "system", op.ID, map[string]any{"request_id": "apr_1"}))
	})
	if err != nil {
		t.Fatal(err)
	}
	// A failing event rolls the caller's row back with it.
	err = db.Store().Write(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO approval_requests (id, state) VALUES ('apr_2', 'pending')`); err != nil {
			return err
		}
		return db.AppendTx(ctx, tx, NewEvent("Not A Type", "system", op.ID, nil))
	})
	if err == nil {
		t.Fatal("bad event type accepted")
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM approval_requests`); n != 1 {
		t.Fatalf("%d approval rows", n)
	}
	hist, err := db.History(ctx, op.ID)
	if err != nil || hist[len(hist)-1].Type != "approval.requested" {
		t.Fatalf("history %+v %v", hist, err)
	}
	mustInvariants(t, db, true)
}

func TestAuditFailsClosed(t *testing.T) { t.Parallel(); eachBackend(t, testAuditFailsClosed) }

func testAuditFailsClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	op := authorizedOp(t, db, "a", "t")
	before := countRows(t, db, `SELECT COUNT(*) FROM audit_events`)
	bad := NewEvent("x.y", "system", "", map[string]any{"ch": make(chan int)})
	if err := db.Append(ctx, bad); err == nil {
		t.Fatal("unmarshalable data accepted")
	}
	// A state change whose audit event cannot be written does not happen.
	if _, err := db.Transition(ctx, op.ID, StateDenied, TransitionOpts{ErrorCode: "policy_denied"}, bad); err == nil {
		t.Fatal("transition with a bad event succeeded")
	}
	if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Amount: usd("1")}, Event{Type: "x.y", Data: json.RawMessage(`{`)}); err == nil {
		t.Fatal("reserve with invalid event JSON succeeded")
	}
	if s := mustState(ctx, db, op.ID); s != StateAuthorized {
		t.Fatalf("state %s after failed calls", s)
	}
	if after := countRows(t, db, `SELECT COUNT(*) FROM audit_events`); after != before {
		t.Fatalf("events %d -> %d", before, after)
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM holds`); n != 0 {
		t.Fatalf("%d holds after a failed reserve", n)
	}
	mustInvariants(t, db, true)
}

func TestAuditRedactsTokensAndDefaults(t *testing.T) {
	t.Parallel()
	eachBackend(t, testAuditRedactsTokensAndDefaults)
}

func testAuditRedactsTokensAndDefaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	token := newToken()
	if err := db.Append(ctx, NewEvent("http.request", "", "", map[string]any{"header": "Bearer " + token}), Event{Type: "empty.data"}); err != nil {
		t.Fatal(err)
	}
	var events []Event
	if err := db.Events(ctx, EventQuery{}, func(e Event) error { events = append(events, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || strings.Contains(string(events[0].Data), token) || !strings.Contains(string(events[0].Data), "tg_[redacted]") {
		t.Fatalf("events %+v", events)
	}
	if events[0].Actor != ActorSystem || string(events[1].Data) != "{}" || events[0].PrevHash != genesisHash || events[1].PrevHash != events[0].Hash {
		t.Fatalf("defaults %+v", events)
	}
}

func TestEventsQuery(t *testing.T) { t.Parallel(); eachBackend(t, testEventsQuery) }

func testEventsQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(nov22)
	db := openTest(t, WithClock(clk.Now))
	op := reserveOK(t, db, "a", "t", "register_domain", "1")
	clk.Advance(time.Hour)
	mid := clk.Now()
	if _, err := db.Release(ctx, op.ID, StateFailed, "x", "y"); err != nil {
		t.Fatal(err)
	}
	if err := db.Append(ctx, NewEvent("other.thing", "cli:bob", "", nil)); err != nil {
		t.Fatal(err)
	}
	collect := func(q EventQuery) []string {
		var out []string
		if err := db.Events(ctx, q, func(e Event) error { out = append(out, fmt.Sprintf("%d:%s", e.Seq, e.Type)); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	all := collect(EventQuery{})
	if len(all) != 7 {
		t.Fatalf("all %v", all)
	}
	if got := collect(EventQuery{Since: mid}); strings.Join(got, " ") != "5:operation.state 6:budget.released 7:other.thing" {
		t.Fatalf("since %v", got)
	}
	if got := collect(EventQuery{AfterSeq: 5, OperationID: op.ID}); strings.Join(got, " ") != "6:budget.released" {
		t.Fatalf("after seq %v", got)
	}
	if got := collect(EventQuery{Types: []string{EventBudgetReserved, EventBudgetReleased}}); strings.Join(got, " ") != "4:budget.reserved 6:budget.released" {
		t.Fatalf("types %v", got)
	}
	stop := errors.New("stop")
	n := 0
	if err := db.Events(ctx, EventQuery{}, func(Event) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("stop: %v after %d", err, n)
	}
	if _, err := db.History(ctx, "op_aaaaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("history of missing op: %v", err)
	}
}

// TestAuditChainAcrossHandles: appenders on two handles (two processes) keep one
// linear chain because each reads the head inside its BEGIN IMMEDIATE transaction.
func TestAuditChainAcrossHandles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chain.db")
	dbs := []*DB{openAt(t, path), openAt(t, path)}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e1 := NewEvent("test.one", "system", "", map[string]any{"i": i})
			e2 := NewEvent("test.two", "system", "", map[string]any{"i": i})
			if err := dbs[i%2].Append(ctx, e1, e2); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	rep, err := dbs[0].Verify(ctx)
	if err != nil || !rep.OK || rep.Checked != 40 {
		t.Fatalf("Verify %+v %v", rep, err)
	}
	// Events of one Append are adjacent.
	var prev Event
	if err := dbs[1].Events(ctx, EventQuery{}, func(e Event) error {
		if e.Type == "test.two" && (prev.Type != "test.one" || string(prev.Data) != string(e.Data)) {
			return fmt.Errorf("event %d not adjacent to its pair", e.Seq)
		}
		prev = e
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAppendsGroupedWithFailures: writers grouped into one transaction
// append through the chain head the previous one left (store.Tx.Memo);
// writers that append and then fail are rolled back with their events, and
// the chain stays whole with exactly the others' events.
func TestAppendsGroupedWithFailures(t *testing.T) {
	t.Parallel()
	eachBackend(t, testAppendsGroupedWithFailures)
}

func testAppendsGroupedWithFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	before := countRows(t, db, `SELECT COUNT(*) FROM audit_events`)
	const writers = 64
	// A write that holds the writer until every writer has started, so
	// they queue up and most share the next group transaction.
	release, blocked := make(chan struct{}), make(chan struct{})
	go func() {
		_ = db.Store().Write(ctx, func(*store.Tx) error { close(blocked); <-release; return nil })
	}()
	<-blocked
	var wg, started sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		started.Add(1)
		wg.Go(func() {
			started.Done()
			errs[i] = db.Store().Write(ctx, func(tx *store.Tx) error {
				if err := db.AppendTx(ctx, tx, NewEvent("test.grouped", "system", "", map[string]any{"i": i}),
					NewEvent("test.grouped", "system", "", map[string]any{"i": i, "second": true})); err != nil {
					return err
				}
				if i%3 == 0 {
					return fmt.Errorf("writer %d fails after appending", i)
				}
				return nil
			})
		})
	}
	started.Wait()
	time.Sleep(20 * time.Millisecond) // let them reach the queue; grouping, not correctness, depends on it
	close(release)
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if (err != nil) != (i%3 == 0) {
			t.Fatalf("writer %d: %v", i, err)
		}
		if err != nil {
			failed++
		}
	}
	if got, want := countRows(t, db, `SELECT COUNT(*) FROM audit_events`)-before, 2*(writers-failed); got != want {
		t.Fatalf("%d events appended, want %d", got, want)
	}
	if rep, err := db.Verify(ctx); err != nil || !rep.OK {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	if db.Store().GroupedWrites() <= db.Store().WriteTransactions() {
		t.Logf("no two writes were grouped this run (%d transactions): the memo went unused", db.Store().WriteTransactions())
	}
}
