package approvals

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"
	_ "modernc.org/sqlite"

	"github.com/tollgatehq/tollgate/ledger/store"
)

const testSecret = "8f742231b10e8888abcd99yyyzzz85a5" // Slack's documented example signing secret

// ---- clock

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *testClock {
	return &testClock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
}

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

// ---- database

// testAuditMigrations add a tiny audit table standing in for the ledger's chain.
var testAuditMigrations = store.Migrations{Component: "test_audit", FS: fstest.MapFS{
	"sqlite/0001_test_audit.sql": {Data: []byte(`CREATE TABLE test_audit (
		seq INTEGER PRIMARY KEY AUTOINCREMENT, typ TEXT NOT NULL, actor TEXT NOT NULL,
		operation_id TEXT NOT NULL, data TEXT NOT NULL);`)},
}}

// openTestDB opens a real SQLite file through the storage layer with this
// package's migrations and the test audit table.
func openTestDB(t testing.TB) (*store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	return openHandle(t, path), path
}

// openHandle opens the database at path again, as another process would.
func openHandle(t testing.TB, path string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), path, store.WithMigrations(Migrations, testAuditMigrations),
		store.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// ---- audit

type auditEvent struct {
	Type, Actor, OperationID string
	Data                     map[string]any
}

// auditLog writes events into the test database, inside the caller's
// transaction when given one, like ledger.AppendTx.
type auditLog struct {
	db   *store.Store
	fail atomic.Bool
}

func (a *auditLog) fn(ctx context.Context, tx *store.Tx, typ, actor, op string, data map[string]any) error {
	if a.fail.Load() {
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
		_, err = a.db.ExecContext(ctx, q, typ, actor, op, string(b))
	}
	return err
}

func (a *auditLog) events(t testing.TB, types ...string) []auditEvent {
	t.Helper()
	rows, err := a.db.QueryContext(context.Background(), `SELECT typ, actor, operation_id, data FROM test_audit ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []auditEvent
	for rows.Next() {
		var e auditEvent
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

// rejections returns the codes of approval.rejected (or other) events.
func (a *auditLog) codes(t testing.TB, typ string) []string {
	t.Helper()
	var out []string
	for _, e := range a.events(t, typ) {
		out = append(out, fmt.Sprint(e.Data["code"]))
	}
	return out
}

// ---- approvers and policy

var testApprovers = []Approver{
	{Name: "alice", SlackUserID: "U0ALICE", OSUser: "alice", Roles: []string{"approver"}},
	{Name: "bob", SlackUserID: "U0BOB", Roles: []string{"approver"}},
	{Name: "carol", SlackUserID: "U0CAROL", OSUser: "cjones", Roles: []string{"finance_approver"}},
	{Name: "dave", SlackUserID: "U0DAVE", Roles: []string{"approver"}}, // owns web-bot
}

// policyAuthorizer mirrors the default approval policy: approver up to 100 USD,
// finance_approver above, never the owner, freeze for any approver.
func policyAuthorizer(calls *atomic.Int64) Authorizer {
	return func(ctx context.Context, a Approver, r Request, action string) (bool, string, error) {
		if calls != nil {
			calls.Add(1)
		}
		if a.Name == r.Owner && action != ActionFreeze {
			return false, "approvers may not decide requests of agents they own", nil
		}
		has := func(role string) bool { return slices.Contains(a.Roles, role) }
		switch action {
		case ActionFreeze:
			return has("approver") || has("finance_approver"), "", nil
		case OutcomeApprove, OutcomeDeny:
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

// ---- fixture

type fixture struct {
	t       testing.TB
	db      *store.Store
	path    string
	clock   *testClock
	audit   *auditLog
	svc     *Service
	slack   *fakeSlack
	authz   atomic.Int64
	decided chan Request
	expired chan Request
	frozen  chan string
}

type fixtureOpt func(*Options, *fixture)

func withSlack(extra ...slacktest.Binder) fixtureOpt {
	return func(o *Options, f *fixture) {
		f.slack = newFakeSlack(f.t, extra...)
		api := slack.New("xoxb-test-token", slack.OptionAPIURL(f.slack.srv.GetAPIURL()))
		o.Notifier = NewSlackNotifier(api, "C0APPROVALS", WithNotifierClock(f.clock.Now))
	}
}

func newFixture(t testing.TB, opts ...fixtureOpt) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: newClock(), decided: make(chan Request, 16), expired: make(chan Request, 16), frozen: make(chan string, 4)}
	f.db, f.path = openTestDB(t)
	f.audit = &auditLog{db: f.db}
	o := Options{
		Approvers:     testApprovers,
		Authorizer:    policyAuthorizer(&f.authz),
		Audit:         f.audit.fn,
		Clock:         f.clock.Now,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		SigningSecret: testSecret,
		// Hooks never block: fuzz targets fire them thousands of times.
		OnDecided: func(ctx context.Context, r Request) { offer(f.decided, r) },
		OnExpired: func(ctx context.Context, r Request) { offer(f.expired, r) },
		OnFreeze: func(ctx context.Context, agent string, by Approver) error {
			offer(f.frozen, agent+" by "+by.Name)
			return nil
		},
		RetryMin: time.Second,
		RetryMax: 8 * time.Second,
	}
	for _, opt := range opts {
		opt(&o, f)
	}
	svc, err := NewService(f.db, o)
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	return f
}

func offer[T any](ch chan T, v T) {
	select {
	case ch <- v:
	default:
	}
}

var opSeq atomic.Int64

func argsHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func domainRequest(now time.Time) Request {
	return Request{
		OperationID: fmt.Sprintf("op_test%06d", opSeq.Add(1)),
		Tool:        "register_domain",
		Agent:       "web-bot",
		Team:        "web",
		Owner:       "dave",
		Client:      "claude-code 1.2.3 (session abc)",
		Summary:     "Register example.dev for 1 year",
		Args: []Field{
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
		ArgsHash:     argsHash(`{"domain":"example.dev","years":1}`),
		Irreversible: true,
		Quorum:       1,
		ExpiresAt:    now.Add(30 * time.Minute),
	}
}

func (f *fixture) request(mut func(*Request)) Request {
	f.t.Helper()
	r := domainRequest(f.clock.Now())
	if mut != nil {
		mut(&r)
	}
	got, err := f.svc.Request(context.Background(), r)
	if err != nil {
		f.t.Fatalf("Request: %v", err)
	}
	return got
}

func (f *fixture) get(id string) Request {
	f.t.Helper()
	r, err := f.svc.Get(context.Background(), id)
	if err != nil {
		f.t.Fatalf("Get %s: %v", id, err)
	}
	return r
}

func (f *fixture) noDecision() {
	f.t.Helper()
	select {
	case r := <-f.decided:
		f.t.Fatalf("OnDecided fired for %s (%s); nothing should be decided", r.ID, r.State)
	default:
	}
}

func (f *fixture) mustDecided(state string) Request {
	f.t.Helper()
	select {
	case r := <-f.decided:
		if r.State != state {
			f.t.Fatalf("OnDecided with state %s, want %s", r.State, state)
		}
		return r
	case <-time.After(5 * time.Second):
		f.t.Fatalf("OnDecided did not fire (want %s)", state)
	}
	return Request{}
}

// ---- Slack Web API (slacktest, with recording handlers for the methods used)

type slackCall struct {
	Method string
	Form   url.Values
	JSON   map[string]any
}

type fakeSlack struct {
	srv       *slacktest.Server
	mu        sync.Mutex
	calls     []slackCall
	failing   atomic.Bool  // answer chat.* and views.* with HTTP 500
	rateLimit atomic.Int64 // > 0: answer 429 with this Retry-After (seconds)
	ts        atomic.Int64
	stopOnce  sync.Once
}

// newFakeSlack starts slacktest's Web API server with recording handlers for the
// methods tollgate calls; extra binders (like a Socket Mode /ws endpoint) come first.
func newFakeSlack(t testing.TB, extra ...slacktest.Binder) *fakeSlack {
	f := &fakeSlack{}
	binders := append(extra, func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", f.handle("chat.postMessage"))
		c.Handle("/chat.update", f.handle("chat.update"))
		c.Handle("/chat.postEphemeral", f.handle("chat.postEphemeral"))
		c.Handle("/views.open", f.handle("views.open"))
	})
	f.srv = slacktest.NewTestServer(binders...)
	f.srv.Start()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeSlack) stop() { f.stopOnce.Do(f.srv.Stop) }

func (f *fakeSlack) handle(method string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if f.failing.Load() {
			http.Error(w, "slack is having a bad day", http.StatusInternalServerError)
			return
		}
		if n := f.rateLimit.Load(); n > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(n, 10))
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		body, _ := io.ReadAll(r.Body)
		call := slackCall{Method: method}
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			_ = json.Unmarshal(body, &call.JSON)
		} else {
			call.Form, _ = url.ParseQuery(string(body))
		}
		f.mu.Lock()
		f.calls = append(f.calls, call)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch method {
		case "chat.postMessage":
			ts := fmt.Sprintf("1790000000.%06d", f.ts.Add(1))
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": call.Form.Get("channel"), "ts": ts})
		case "chat.update":
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": call.Form.Get("channel"), "ts": call.Form.Get("ts"), "text": call.Form.Get("text")})
		case "chat.postEphemeral":
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "message_ts": "1790000000.999999"})
		case "views.open":
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "view": map[string]any{"id": "V0DENY"}})
		}
	}
}

func (f *fakeSlack) byMethod(method string) []slackCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []slackCall
	for _, c := range f.calls {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeSlack) lastEphemeral(t testing.TB) string {
	t.Helper()
	eph := f.byMethod("chat.postEphemeral")
	if len(eph) == 0 {
		t.Fatal("no ephemeral reply was sent")
	}
	return eph[len(eph)-1].Form.Get("text")
}

// ---- signed interaction payloads, as Slack sends them

func slackUser(id string) map[string]any {
	return map[string]any{"id": id, "username": strings.ToLower(id), "name": strings.ToLower(id), "team_id": "T0TOLLGATE"}
}

var clickSeq atomic.Int64

// blockActionPayload is a button click as Slack sends it; like Slack, every
// click has its own trigger_id and action_ts.
func blockActionPayload(userID, actionID, value string) map[string]any {
	n := clickSeq.Add(1)
	return map[string]any{
		"type":       "block_actions",
		"user":       slackUser(userID),
		"api_app_id": "A0TOLLGATE",
		"token":      "verification-token-unused",
		"container": map[string]any{
			"type": "message", "message_ts": "1790000000.000001", "channel_id": "C0APPROVALS", "is_ephemeral": false,
		},
		"trigger_id":            "13345224609.738474920.8088930838d88f008e0",
		"team":                  map[string]any{"id": "T0TOLLGATE", "domain": "tollgate"},
		"enterprise":            nil,
		"is_enterprise_install": false,
		"channel":               map[string]any{"id": "C0APPROVALS", "name": "approvals"},
		"message": map[string]any{
			"type": "message", "user": "U0BOT", "ts": "1790000000.000001", "bot_id": "B0BOT", "text": "Approval needed",
		},
		"state":        map[string]any{"values": map[string]any{}},
		"response_url": "https://hooks.slack.com/actions/T0TOLLGATE/1/abc",
		"actions": []any{map[string]any{
			"action_id": actionID,
			"block_id":  BlockActions,
			"text":      map[string]any{"type": "plain_text", "text": "Approve", "emoji": true},
			"value":     value,
			"style":     "primary",
			"type":      "button",
			"action_ts": fmt.Sprintf("1790000123.%06d", n),
		}},
	}
}

func viewSubmissionPayload(userID, requestID, reason string) map[string]any {
	return map[string]any{
		"type":       "view_submission",
		"team":       map[string]any{"id": "T0TOLLGATE", "domain": "tollgate"},
		"user":       slackUser(userID),
		"api_app_id": "A0TOLLGATE",
		"token":      "verification-token-unused",
		"trigger_id": "13345224609.738474920.8088930838d88f008e1",
		"view": map[string]any{
			"id":               "V0DENY",
			"team_id":          "T0TOLLGATE",
			"type":             "modal",
			"private_metadata": requestID,
			"callback_id":      DenyModalCallbackID,
			"hash":             "156772938.1827394",
			"title":            map[string]any{"type": "plain_text", "text": "Deny request"},
			"blocks":           []any{},
			"state": map[string]any{"values": map[string]any{
				DenyReasonBlockID: map[string]any{
					DenyReasonActionID: map[string]any{"type": "plain_text_input", "value": reason},
				},
			}},
		},
		"response_urls":         []any{},
		"is_enterprise_install": false,
	}
}

// signedBody form-encodes payload as Slack does.
func signedBody(t testing.TB, payload any) string {
	t.Helper()
	js, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return url.Values{"payload": {string(js)}}.Encode()
}

func sign(secret, ts, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + ts + ":" + body))
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}

func interactionRequest(body, ts, sig string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/slack/interactions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if ts != "" {
		req.Header.Set("X-Slack-Request-Timestamp", ts)
	}
	if sig != "" {
		req.Header.Set("X-Slack-Signature", sig)
	}
	return req
}

// click sends payload signed now (wall clock: Slack's window is real time) and returns the response.
func (f *fixture) click(payload any) *httptest.ResponseRecorder {
	f.t.Helper()
	body := signedBody(f.t, payload)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	rec := httptest.NewRecorder()
	f.svc.InteractionHandler().ServeHTTP(rec, interactionRequest(body, ts, sign(testSecret, ts, body)))
	return rec
}
