package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
	"github.com/tollgatehq/tollgate/ledger/store/storetest"
)

// testClock is an injectable clock; tests move it instead of sleeping.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *testClock { return &testClock{t: t.UTC()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t.UTC()
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// testKey keys every test ledger, as tollgate always keys its own; tests of the
// unkeyed (legacy) chain pass withoutKey().
var testKey = func() *AuditKey {
	k, err := GenerateAuditKey()
	if err != nil {
		panic(err)
	}
	return k
}()

func withoutKey() Option { return WithAuditKey(nil) }

// openTest opens a ledger on a fresh database: a PostgreSQL one inside a
// "postgres" subtest of eachBackend, a temp SQLite file otherwise.
func openTest(t testing.TB, opts ...Option) *DB {
	t.Helper()
	if backendOf(t) == storetest.Postgres {
		return openAt(t, storetest.PostgresDSN(t), opts...)
	}
	return openAt(t, filepath.Join(t.TempDir(), "ledger", "tollgate.db"), opts...)
}

// eachBackend runs fn once per storage backend, as subtests named after it;
// openTest inside fn opens that backend.
func eachBackend(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	storetest.Run(t, func(t *testing.T, _ storetest.Backend) { fn(t) })
}

// backendOf is the backend eachBackend chose for t (or a parent of t).
func backendOf(t testing.TB) storetest.Backend {
	for _, part := range strings.Split(t.Name(), "/") {
		if part == storetest.Postgres.Name {
			return storetest.Postgres
		}
	}
	return storetest.SQLite
}

func openAt(t testing.TB, path string, opts ...Option) *DB {
	t.Helper()
	db, err := Open(context.Background(), path, append([]Option{WithLogger(quietLog), WithAuditKey(testKey)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func usd(s string) money.Money {
	m, err := money.ParseMoney(s, "USD")
	if err != nil {
		panic(err)
	}
	return m
}

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// newOp creates an operation with a unique explicit key.
func newOp(t testing.TB, db *DB, agent, team, tool, args string) Operation {
	t.Helper()
	op, created, err := db.CreateOperation(context.Background(), NewOperation{
		Agent: agent, Team: team, Tool: tool, Resource: "domain:" + args,
		Args: json.RawMessage(fmt.Sprintf(`{"domain":%q}`, args)), ArgsHash: hashOf(tool + args),
		Reason: "test operation for the ledger", IdempotencyKey: newID("k-", 12),
	})
	if err != nil || !created {
		t.Fatalf("CreateOperation: created=%v err=%v", created, err)
	}
	return op
}

// authorizedOp creates an operation and moves it to authorized.
func authorizedOp(t testing.TB, db *DB, agent, team string) Operation {
	t.Helper()
	op := newOp(t, db, agent, team, "register_domain", newID("", 10)+".dev")
	op, err := db.Transition(context.Background(), op.ID, StateAuthorized, TransitionOpts{From: []State{StatePlanned}, Actor: "system"})
	if err != nil {
		t.Fatalf("Transition authorized: %v", err)
	}
	return op
}

// pipelineOp creates, authorizes and reserves in one go; it returns the reserve error.
func pipelineOp(ctx context.Context, db *DB, agent, team, action string, amount money.Money) (Operation, error) {
	sum := sha256.Sum256([]byte(newID("", 20)))
	op, _, err := db.CreateOperation(ctx, NewOperation{
		Agent: agent, Team: team, Tool: action, Resource: "domain:x.dev", Args: json.RawMessage(`{}`),
		ArgsHash: hex.EncodeToString(sum[:]), Reason: "pipeline", IdempotencyKey: newID("k-", 16),
	})
	if err != nil {
		return Operation{}, err
	}
	if _, err := db.Transition(ctx, op.ID, StateAuthorized, TransitionOpts{From: []State{StatePlanned}}); err != nil {
		return Operation{}, err
	}
	return db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Action: action, Amount: amount})
}

// execute moves a reserved operation to executing (optionally via approval).
func execute(ctx context.Context, db *DB, id string, viaApproval bool) error {
	if viaApproval {
		exp := time.Now().Add(time.Hour)
		if _, err := db.Transition(ctx, id, StateAwaitingApproval, TransitionOpts{From: []State{StateReserved}, ExpiresAt: &exp}); err != nil {
			return err
		}
		if _, err := db.Transition(ctx, id, StateApproved, TransitionOpts{From: []State{StateAwaitingApproval}, Actor: "slack:U1"}); err != nil {
			return err
		}
	}
	_, err := db.Transition(ctx, id, StateExecuting, TransitionOpts{})
	return err
}

// checkInvariants verifies, in one read snapshot, everything the spend rails
// promise: running totals equal a recomputation from holds and charges, velocity
// counts equal unreleased reservations, holds exist exactly for holding states,
// no operation was both settled and released, every budget has spent+held <=
// limit (when withinLimits), and the audit chain verifies.
func checkInvariants(ctx context.Context, db *DB, withinLimits bool) error {
	if err := checkTotals(ctx, db, withinLimits); err != nil {
		return err
	}
	rep, err := db.Verify(ctx)
	if err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("audit chain broken: %+v", rep)
	}
	return nil
}

// checkTotals is checkInvariants without the audit chain walk (which grows with
// history), for checking after every step of a long run.
func checkTotals(ctx context.Context, db *DB, withinLimits bool) error {
	var problems []error
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		q := func(query string) error {
			rows, err := tx.QueryContext(ctx, query)
			if err != nil {
				return err
			}
			defer rows.Close()
			cols, _ := rows.Columns()
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					return err
				}
				problems = append(problems, fmt.Errorf("%.60s…: %v", query, vals))
			}
			return rows.Err()
		}
		checks := []string{
			// held totals == sum of live holds (both directions)
			`SELECT t.scope, t.win, t.period, t.held_micros, COALESCE(h.s, 0) FROM spend_totals t
			 LEFT JOIN (SELECT scope, win, period, currency, SUM(amount_micros) s FROM holds GROUP BY 1,2,3,4) h
			 USING (scope, win, period, currency) WHERE t.held_micros <> COALESCE(h.s, 0)`,
			`SELECT h.scope, h.win, h.period FROM holds h LEFT JOIN spend_totals t USING (scope, win, period, currency) WHERE t.scope IS NULL`,
			// spent totals == sum of charges
			`SELECT t.scope, t.win, t.period, t.spent_micros, COALESCE(c.s, 0) FROM spend_totals t
			 LEFT JOIN (SELECT scope, win, period, currency, SUM(amount_micros) s FROM charges GROUP BY 1,2,3,4) c
			 USING (scope, win, period, currency) WHERE t.spent_micros <> COALESCE(c.s, 0)`,
			// velocity == holds + charges of the action in day/month windows
			`SELECT v.scope, v.action, v.win, v.period, v.count, COALESCE(x.n, 0) FROM velocity_totals v
			 LEFT JOIN (SELECT scope, action, win, period, COUNT(*) n FROM
			   (SELECT scope, action, win, period FROM holds UNION ALL SELECT scope, action, win, period FROM charges)
			   WHERE action <> '' AND win <> 'total' GROUP BY 1,2,3,4) x
			 USING (scope, action, win, period) WHERE v.count <> COALESCE(x.n, 0)`,
			// holds exist exactly for holding states
			`SELECT DISTINCT o.id, o.state FROM holds h JOIN operations o ON o.id = h.operation_id
			 WHERE o.state NOT IN ('reserved','awaiting_approval','approved','executing','in_doubt')`,
			`SELECT o.id, o.state FROM operations o WHERE o.state IN ('reserved','awaiting_approval','approved','executing','in_doubt')
			 AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.operation_id = o.id)`,
			// charges only for succeeded operations, and those carry charged_micros
			`SELECT DISTINCT o.id, o.state FROM charges c JOIN operations o ON o.id = c.operation_id WHERE o.state <> 'succeeded' OR o.charged_micros IS NULL`,
			// settled and released never both; settled at most once
			`SELECT operation_id FROM audit_events WHERE type = 'budget.settled' INTERSECT SELECT operation_id FROM audit_events WHERE type = 'budget.released'`,
			`SELECT operation_id, COUNT(*) FROM audit_events WHERE type = 'budget.settled' GROUP BY 1 HAVING COUNT(*) > 1`,
			`SELECT operation_id, COUNT(*) FROM audit_events WHERE type = 'budget.released' GROUP BY 1 HAVING COUNT(*) > 1`,
			// a mandate's count and amount == its uses not given back
			`SELECT m.id, m.used_count, m.used_micros, COALESCE(u.n, 0), COALESCE(u.s, 0) FROM mandates m
			 LEFT JOIN (SELECT mandate_id, COUNT(*) n, SUM(amount_micros) s FROM mandate_uses WHERE returned_at IS NULL GROUP BY 1) u
			 ON u.mandate_id = m.id WHERE m.used_count <> COALESCE(u.n, 0) OR m.used_micros <> COALESCE(u.s, 0)`,
			// a use is given back exactly when its operation was released without a charge
			`SELECT u.operation_id, o.state, u.returned_at FROM mandate_uses u JOIN operations o ON o.id = u.operation_id
			 WHERE (u.returned_at IS NULL) = (o.state IN ('failed','denied','expired','cancelled'))`,
		}
		for _, c := range checks {
			if err := q(c); err != nil {
				return err
			}
		}
		if withinLimits {
			st, err := budgetStatuses(ctx, tx, db.now(), nil)
			if err != nil {
				return err
			}
			for _, s := range st {
				if s.Spent.Micros+s.Held.Micros > s.Budget.Limit.Micros {
					problems = append(problems, fmt.Errorf("budget %s (%s): spent %s + held %s > limit %s", s.Budget.Scope, s.Budget.Window, s.Spent, s.Held, s.Budget.Limit))
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return errors.Join(problems...)
}

func mustInvariants(t testing.TB, db *DB, withinLimits bool) {
	t.Helper()
	if err := checkInvariants(context.Background(), db, withinLimits); err != nil {
		t.Fatalf("invariants: %v", err)
	}
}

func countRows(t testing.TB, db *DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.st.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("count %q: %v", query, err)
	}
	return n
}

// TestMain stops the PostgreSQL cluster the suite's postgres subtests share.
func TestMain(m *testing.M) { storetest.Main(m) }

// countEvents counts the audit events of type typ for which match holds.
func countEvents(t testing.TB, db *DB, typ string, match func(actor string, data map[string]any) bool) int {
	t.Helper()
	rows, err := db.st.QueryContext(context.Background(), `SELECT actor, data FROM audit_events WHERE type = ?`, typ)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var actor, data string
		if err := rows.Scan(&actor, &data); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			t.Fatalf("event data %q: %v", data, err)
		}
		if match(actor, m) {
			n++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
