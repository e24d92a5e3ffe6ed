// Package approvalstest is what the tests of the approvals channels share: a
// real SQLite store with the approvals tables and a small audit table, a clock
// to move by hand, an authorizer that mirrors the default approval policy, and
// an approvals service wired to all of them. It is imported by tests only.
package approvalstest

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
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	_ "modernc.org/sqlite" // the SQLite driver the store opens

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// Clock is a time source moved by hand.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts at 2026-11-22 10:00 UTC.
func NewClock() *Clock { return &Clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// AuditMigrations add a tiny audit table standing in for the ledger's chain.
var AuditMigrations = store.Migrations{Component: "test_audit", FS: fstest.MapFS{
	"sqlite/0001_test_audit.sql": {Data: []byte(`CREATE TABLE test_audit (
		seq INTEGER PRIMARY KEY AUTOINCREMENT, typ TEXT NOT NULL, actor TEXT NOT NULL,
		operation_id TEXT NOT NULL, data TEXT NOT NULL);`)},
}}

// OpenStore opens a real SQLite file in a temporary folder with the approvals
// tables and the test audit table; it is closed when the test ends.
func OpenStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	return OpenHandle(t, path), path
}

// OpenHandle opens the database at path again, as another process would.
func OpenHandle(t testing.TB, path string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), path, store.WithMigrations(approvals.Migrations, AuditMigrations),
		store.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// AuditEvent is one row of the test audit table.
type AuditEvent struct {
	Type, Actor, OperationID string
	Data                     map[string]any
}

// AuditLog writes events into the test database, inside the caller's
// transaction when given one, like ledger.AppendTx.
type AuditLog struct {
	DB   *store.Store
	Fail atomic.Bool // while set, every append fails
}

// Fn is the approvals.AuditFunc.
func (a *AuditLog) Fn(ctx context.Context, tx *store.Tx, typ, actor, op string, data map[string]any) error {
	if a.Fail.Load() {
		return errors.New("audit store unavailable")
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	const q = `INSERT INTO test_audit (typ, actor, operation_id, data) VALUES (?, ?, ?, ?)`
	if tx != nil {
		_, err = tx.ExecContext(ctx, q, typ, actor, op, string(b))
	} else {
		_, err = a.DB.ExecContext(ctx, q, typ, actor, op, string(b))
	}
	return err
}

// Events returns the events of the given types (all when none), in order.
func (a *AuditLog) Events(t testing.TB, types ...string) []AuditEvent {
	t.Helper()
	rows, err := a.DB.QueryContext(context.Background(), `SELECT typ, actor, operation_id, data FROM test_audit ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []AuditEvent
	for rows.Next() {
		var e AuditEvent
		var data string
		if err := rows.Scan(&e.Type, &e.Actor, &e.OperationID, &data); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(data), &e.Data); err != nil {
			t.Fatal(err)
		}
		if len(types) == 0 || slices.Contains(types, e.Type) {
			out = append(out, e)
		}
	}
	return out
}

// Codes returns the data "code" of every event of type typ.
func (a *AuditLog) Codes(t testing.TB, typ string) []string {
	t.Helper()
	var out []string
	for _, e := range a.Events(t, typ) {
		out = append(out, fmt.Sprint(e.Data["code"]))
	}
	return out
}

// Approvers are four approvers; dave owns the agent web-bot of DomainRequest.
var Approvers = []approvals.Approver{
	{Name: "alice", SlackUserID: "U0ALICE", OSUser: "alice", Roles: []string{"approver"}},
	{Name: "bob", SlackUserID: "U0BOB", Roles: []string{"approver"}},
	{Name: "carol", SlackUserID: "U0CAROL", OSUser: "cjones", Roles: []string{"finance_approver"}},
	{Name: "dave", SlackUserID: "U0DAVE", Roles: []string{"approver"}}, // owns web-bot
}

// PolicyAuthorizer mirrors the default approval policy: approver up to 100
// USD, finance_approver above, never the owner, freeze for any approver. It
// counts its calls in calls when given.
func PolicyAuthorizer(calls *atomic.Int64) approvals.Authorizer {
	return func(ctx context.Context, a approvals.Approver, r approvals.Request, action string) (bool, string, error) {
		if calls != nil {
			calls.Add(1)
		}
		if a.Name == r.Owner && action != approvals.ActionFreeze {
			return false, "approvers may not decide requests of agents they own", nil
		}
		has := func(role string) bool { return slices.Contains(a.Roles, role) }
		switch action {
		case approvals.ActionFreeze:
			return has("approver") || has("finance_approver"), "", nil
		case approvals.OutcomeApprove, approvals.OutcomeDeny:
			if has("finance_approver") {
				return true, "", nil
			}
			if has("approver") && r.AmountMicros <= 100_000_000 {
				return true, "", nil
			}
			return false, "amounts above 100.00 USD need a finance_approver", nil
		}
		return false, "unknown action " + action, nil
	}
}

// ArgsHash is the sha256 of s in hex.
func ArgsHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

var opSeq atomic.Int64

// DomainRequest is a pending registration of example.dev by web-bot (owned
// by dave) for 12.20 USD, expiring 30 minutes after now, with a fresh
// operation id.
func DomainRequest(now time.Time) approvals.Request {
	return approvals.Request{
		OperationID: fmt.Sprintf("op_test%06d", opSeq.Add(1)),
		Tool:        "register_domain",
		Agent:       "web-bot",
		Team:        "web",
		Owner:       "dave",
		Client:      "claude-code 1.2.3 (session abc)",
		Summary:     "Register example.dev for 1 year",
		Args: []approvals.Field{
			{Label: "domain", Value: "example.dev"},
			{Label: "years", Value: "1"},
			{Label: "auto_renew", Value: "false"},
			{Label: "privacy", Value: "redaction"},
		},
		AmountMicros: 12_200_000,
		Currency:     "USD",
		AmountText:   "12.20 USD",
		Headroom: []string{
			"agent:web-bot day — 37.80 USD left of 50.00 USD",
			"team:web month — 487.80 USD left of 500.00 USD",
		},
		Reason:       "The marketing site for the autumn launch needs its own domain.",
		Policy:       "allowed by domain policy (extension .dev is on the allowlist; 12.20 USD ≤ 50.00 USD ceiling); approval required: registration is irreversible",
		ArgsHash:     ArgsHash(`{"domain":"example.dev","years":1}`),
		Irreversible: true,
		Quorum:       1,
		ExpiresAt:    now.Add(30 * time.Minute),
	}
}

// Fixture is an approvals service on a real SQLite file with a hand-moved
// clock, the test audit table and hooks that report on channels.
type Fixture struct {
	T          testing.TB
	DB         *store.Store
	Path       string
	Clock      *Clock
	Audit      *AuditLog
	Svc        *approvals.Service
	AuthzCalls atomic.Int64
	Decided    chan approvals.Request // OnDecided
	Expired    chan approvals.Request // OnExpired
	Frozen     chan string            // OnFreeze: "AGENT by APPROVER via VIA"
}

// Option changes the service's options before it is built; the fixture's
// clock, store and audit log are ready.
type Option func(*approvals.Options, *Fixture)

// New builds a Fixture.
func New(t testing.TB, opts ...Option) *Fixture {
	t.Helper()
	f := &Fixture{T: t, Clock: NewClock(), Decided: make(chan approvals.Request, 16), Expired: make(chan approvals.Request, 16), Frozen: make(chan string, 4)}
	f.DB, f.Path = OpenStore(t)
	f.Audit = &AuditLog{DB: f.DB}
	o := approvals.Options{
		Approvers:  Approvers,
		Authorizer: PolicyAuthorizer(&f.AuthzCalls),
		Audit:      f.Audit.Fn,
		Clock:      f.Clock.Now,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Hooks never block: fuzz targets fire them thousands of times.
		OnDecided: func(ctx context.Context, r approvals.Request) { offer(f.Decided, r) },
		OnExpired: func(ctx context.Context, r approvals.Request) { offer(f.Expired, r) },
		OnFreeze: func(ctx context.Context, agent string, by approvals.Approver, via string) error {
			offer(f.Frozen, agent+" by "+by.Name+" via "+via)
			return nil
		},
		RetryMin: time.Second,
		RetryMax: 8 * time.Second,
	}
	for _, opt := range opts {
		opt(&o, f)
	}
	svc, err := approvals.NewService(f.DB, o)
	if err != nil {
		t.Fatal(err)
	}
	f.Svc = svc
	return f
}

func offer[T any](ch chan T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// Request records DomainRequest(now), changed by mut.
func (f *Fixture) Request(mut func(*approvals.Request)) approvals.Request {
	f.T.Helper()
	r := DomainRequest(f.Clock.Now())
	if mut != nil {
		mut(&r)
	}
	got, err := f.Svc.Request(context.Background(), r)
	if err != nil {
		f.T.Fatalf("Request: %v", err)
	}
	return got
}

// Get reads request id.
func (f *Fixture) Get(id string) approvals.Request {
	f.T.Helper()
	r, err := f.Svc.Get(context.Background(), id)
	if err != nil {
		f.T.Fatalf("Get %s: %v", id, err)
	}
	return r
}

// NoDecision fails the test if OnDecided fired.
func (f *Fixture) NoDecision() {
	f.T.Helper()
	select {
	case r := <-f.Decided:
		f.T.Fatalf("OnDecided fired for %s (%s); nothing should be decided", r.ID, r.State)
	default:
	}
}

// MustDecided waits for OnDecided with state.
func (f *Fixture) MustDecided(state string) approvals.Request {
	f.T.Helper()
	select {
	case r := <-f.Decided:
		if r.State != state {
			f.T.Fatalf("OnDecided with state %s, want %s", r.State, state)
		}
		return r
	case <-time.After(5 * time.Second):
		f.T.Fatalf("OnDecided did not fire (want %s)", state)
	}
	return approvals.Request{}
}
