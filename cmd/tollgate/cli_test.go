package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/web"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/server"
)

// run invokes a subcommand in process against a database, returning stdout.
func run(t *testing.T, db string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := dispatch(context.Background(), append(args, "--db", db), &out)
	return out.String(), err
}

func mustRun(t *testing.T, db string, args ...string) string {
	t.Helper()
	out, err := run(t, db, args...)
	if err != nil {
		t.Fatalf("tollgate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestBudgetAndLimitCLI drives the budget and limit commands on a real
// database and reads the results back with --json and through the ledger.
func TestBudgetAndLimitCLI(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	db := filepath.Join(t.TempDir(), "t.db")
	mustRun(t, db, "budget", "set", "--scope", "team:web", "--window", "day", "--limit", "25.00")
	mustRun(t, db, "budget", "set", "--scope", "global", "--window", "month", "--limit", "500", "--currency", "USD")
	var budgets []budgetJSON
	if err := json.Unmarshal([]byte(mustRun(t, db, "budget", "list", "--json")), &budgets); err != nil {
		t.Fatal(err)
	}
	if len(budgets) != 2 {
		t.Fatalf("budgets %+v", budgets)
	}
	show := mustRun(t, db, "budget", "show", "--scope", "team:web")
	for _, want := range []string{"team:web", "25.00 USD", "REMAINING", "RESETS AT"} {
		if !strings.Contains(show, want) {
			t.Errorf("budget show lacks %q:\n%s", want, show)
		}
	}
	for _, bad := range [][]string{
		{"budget", "set", "--scope", "team:web", "--window", "week", "--limit", "1"},
		{"budget", "set", "--scope", "teams:web", "--window", "day", "--limit", "1"},
		{"budget", "set", "--scope", "team:web", "--window", "day", "--limit", "1.0000001"},
		{"budget", "set", "--scope", "team:web", "--window", "day", "--limit", "-5"},
	} {
		if _, err := run(t, db, bad...); err == nil {
			t.Errorf("tollgate %s: accepted", strings.Join(bad, " "))
		}
	}
	mustRun(t, db, "limit", "set", "--scope", "agent:web-bot", "--action", "register_domain", "--window", "day", "--max", "3")
	if _, err := run(t, db, "limit", "set", "--scope", "agent:web-bot", "--action", "delete_zone", "--window", "day", "--max", "3"); err == nil {
		t.Error("an unknown action was accepted")
	}
	l, err := ledger.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	limits, err := l.Limits(context.Background())
	if err != nil || len(limits) != 1 || limits[0].Max != 3 {
		t.Fatalf("limits %+v %v", limits, err)
	}
	// Changes are audited with the OS user as the actor.
	var seen bool
	_ = l.Events(context.Background(), ledger.EventQuery{}, func(e ledger.Event) error {
		if strings.HasPrefix(e.Type, "budget.") && strings.HasPrefix(e.Actor, "cli:") {
			seen = true
		}
		return nil
	})
	if !seen {
		t.Error("budget changes are not audited with a cli: actor")
	}
}

// TestAgentsAndAuditCLI: a token is printed once and only its hash stored;
// the audit chain verifies, and fails at the edited row after tampering.
func TestAgentsAndAuditCLI(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	db := filepath.Join(t.TempDir(), "t.db")
	tok := strings.TrimSpace(mustRun(t, db, "agents", "create", "web-bot", "--team", "web", "--roles", "agent,deployer", "--ttl", "1h"))
	if !strings.HasPrefix(tok, "tg_") {
		t.Fatalf("token %q", tok)
	}
	list := mustRun(t, db, "agents", "list")
	if strings.Contains(list, tok) || !strings.Contains(list, "web-bot") {
		t.Fatalf("agents list must show the agent but never the token:\n%s", list)
	}
	rotated := strings.TrimSpace(mustRun(t, db, "agents", "rotate", "web-bot", "--overlap", "1m"))
	if rotated == tok || !strings.HasPrefix(rotated, "tg_") {
		t.Fatalf("rotate printed %q", rotated)
	}
	mustRun(t, db, "agents", "revoke", "web-bot")
	raw, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(tok)) || bytes.Contains(raw, []byte(rotated)) {
		t.Fatal("a bearer token is stored in the database file")
	}
	if out := mustRun(t, db, "audit", "verify"); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %s", out)
	}
	var lines int
	for _, l := range strings.Split(strings.TrimSpace(mustRun(t, db, "audit", "export", "--format", "jsonl")), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("export line %q: %v", l, err)
		}
		lines++
	}
	if lines < 3 {
		t.Fatalf("export has %d events", lines)
	}
	if _, err := run(t, db, "audit", "export", "--format", "csv"); err == nil {
		t.Error("an unsupported export format was accepted")
	}
}

// TestLocalApproverUsesTheServersApprovers: the CLI decides who may vote from
// the approvers the server published, so running it without the server's
// tollgate.yaml (where the built-in default would make the OS user an
// approver) cannot approve anything.
func TestLocalApproverUsesTheServersApprovers(t *testing.T) {
	ctx := context.Background()
	db, l, pub := servedLedger(t, server.ApproverConfig{Name: "carol", OSUser: "carol-not-you", Roles: []string{"approver"}})
	req, err := pub.Request(ctx, approvals.Request{
		OperationID: "op_aaaaaaaaaaaaaaaaaaaaaaaaaa", Tool: "register_domain", Agent: "local", Team: "local",
		Summary: "Register x.dev", AmountMicros: 12_180_000, Currency: "USD", ArgsHash: strings.Repeat("a", 64),
		Irreversible: true, Quorum: 1, ExpiresAt: time.Now().Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	out, err := run(t, db, "approvals", "approve", req.ID)
	if err == nil || !strings.Contains(err.Error(), "not mapped to an approver") {
		t.Fatalf("approve without the server's config: %v\n%s", err, out)
	}
}

// TestFreezeWorksWithoutThePolicyEngine: the kill switch must not depend on
// the thing that might be broken; freeze list shows it, unfreeze lifts it.
func TestFreezeWorksWithoutThePolicyEngine(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	t.Setenv("TOLLGATE_CERBOS_BIN", "/nonexistent/cerbos")
	db := filepath.Join(t.TempDir(), "t.db")
	out := mustRun(t, db, "freeze", "--agent", "web-bot", "--reason", "runaway loop")
	if !strings.Contains(out, "agent:web-bot frozen") {
		t.Fatalf("freeze: %s", out)
	}
	var fz []ledger.Freeze
	if err := json.Unmarshal([]byte(mustRun(t, db, "freeze", "list", "--json")), &fz); err != nil || len(fz) != 1 || fz[0].Reason != "runaway loop" {
		t.Fatalf("freeze list: %+v %v", fz, err)
	}
	mustRun(t, db, "unfreeze", "--agent", "web-bot")
	if out := mustRun(t, db, "freeze", "list"); strings.Contains(out, "web-bot") {
		t.Fatalf("still frozen after unfreeze:\n%s", out)
	}
	if _, err := run(t, db, "freeze", "--agent", "a", "--team", "b", "--reason", "x"); err == nil {
		t.Error("two scopes at once were accepted")
	}
	// Read-only commands refuse a database that does not exist.
	if _, err := run(t, filepath.Join(t.TempDir(), "typo.db"), "audit", "verify"); err == nil || !strings.Contains(err.Error(), "no database at") {
		t.Errorf("audit verify on a missing database: %v", err)
	}
	// A positional id may follow the flags.
	if _, err := run(t, db, "audit", "show", "op_doesnotexist"); err == nil || strings.Contains(err.Error(), "usage") {
		t.Errorf("audit show with the id after the flags: %v", err)
	}
}

// TestApprovalsOpenPrintsALink: approvals open mints a one-time link for the
// approver this OS user maps to, on the address the server published, and
// refuses anyone the server's approvers do not map.
func TestApprovalsOpenPrintsALink(t *testing.T) {
	ctx := context.Background()
	me := osUser()
	db, l, _ := servedLedger(t, server.ApproverConfig{Name: "ops-lead", OSUser: me, Roles: []string{"approver"}},
		server.ApproverConfig{Name: "carol", OSUser: "carol-not-you", Roles: []string{"approver"}})
	if err := web.PublishBase(ctx, l.Store(), "https://tollgate.example.com", time.Now()); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()

	out := mustRun(t, db, "approvals", "open", "--print", "--request", "apr_abc")
	link := regexp.MustCompile(`https://tollgate\.example\.com/console/signin\?t=[A-Za-z0-9_-]{43}`).FindString(out)
	if link == "" || !strings.Contains(out, "approver ops-lead") || strings.Contains(out, "Opened") {
		t.Fatalf("approvals open --print:\n%s", out)
	}
	if _, err := run(t, db, "approvals", "open", "--print", "--as", "carol"); err == nil || !strings.Contains(err.Error(), "mapped to OS user") {
		t.Fatalf("--as someone else: %v", err)
	}
	if _, err := run(t, db, "approvals", "open", "--print", "--request", "../../x"); err == nil {
		t.Fatal("a bad --request was accepted")
	}
	// The link is stored hashed, lands on the request, and is audited.
	l, err := ledger.Open(ctx, db, ledger.WithMigrations(approvals.Migrations))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var approver, next string
	if err := l.Store().QueryRowContext(ctx, `SELECT approver, next_path FROM approval_console_links`).Scan(&approver, &next); err != nil || approver != "ops-lead" || next != "/console/approvals/apr_abc" {
		t.Fatalf("stored link: %s %s %v", approver, next, err)
	}
	n := 0
	_ = l.Events(ctx, ledger.EventQuery{Types: []string{web.EventLinkCreated}}, func(e ledger.Event) error {
		if e.Actor == "cli:"+me {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Fatalf("%d link events by cli:%s, want 1", n, me)
	}
}

// servedLedger is a database on which a server with these approvers has
// published them, as tollgate serve does at start; the ledger is open.
func servedLedger(t *testing.T, approvers ...server.ApproverConfig) (string, *ledger.DB, *approvals.Service) {
	t.Helper()
	t.Setenv("TOLLGATE_CONFIG", "")
	db := filepath.Join(t.TempDir(), "t.db")
	l, err := ledger.Open(context.Background(), db, ledger.WithMigrations(approvals.Migrations), ledger.WithAuditKey(cliAuditKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Default()
	cfg.DB = db
	cfg.Approvers = approvers
	pub, err := server.NewApprovals(l, nil, cfg, server.ApprovalHooks{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishApprovers(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, l, pub
}
