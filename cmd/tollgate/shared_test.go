//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// call runs a mutating tool and returns the operation it reports (refused
// ones included) or an error: for calls made from goroutines other than the
// test's.
func (p *serveProc) call(name string, args map[string]any) (tools.OperationView, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := p.c.CallTool(ctx, req)
	if err != nil {
		return tools.OperationView{}, fmt.Errorf("%s: %w", name, err)
	}
	b, _ := json.Marshal(res.StructuredContent)
	var v tools.OperationView
	// A refused operation is a tool error that still carries the operation.
	if err := json.Unmarshal(b, &v); err != nil || v.OperationID == "" {
		return v, fmt.Errorf("%s: error %v, result %s %v", name, err, b, res.Content)
	}
	return v, nil
}

// plainCLI runs a tollgate subcommand the way someone at a terminal would
// with nothing but --db: no config file, not in the config's folder. (The
// audit key every process on the database uses is given by its variable.)
func (e *crashEnv) plainCLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, append(args, "--db", e.dsn)...)
	for _, kv := range e.env() {
		if !strings.HasPrefix(kv, "TOLLGATE_CONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TOLLGATE_AUDIT_KEY_FILE="+filepath.Join(e.dir, "audit.key"))
	cmd.Dir = e.t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestStdioServersShareOneLedger is issue 10's first acceptance test: eight
// `tollgate serve --transport stdio` processes (as eight Claude sessions
// start them) on one SQLite file race for a team budget of 2.5 × the price
// of a domain. All eight serve; exactly two reservations fit and wait for a
// human, the six others are refused naming the budget; spent + held never
// exceeds the limit at any sampled moment. The two approvals are given with
// the CLI and nothing but --db, and resume the calls waiting inside two of
// the servers, which return the registrations. Then two processes acting
// for the same agent send one call with the same idempotency key at once:
// one operation, not two.
func TestStdioServersShareOneLedger(t *testing.T) {
	if testing.Short() {
		t.Skip("starts eight tollgate servers, a sandbox and Cerbos processes; skipped with -short")
	}
	t.Parallel()
	const (
		servers = 8
		price   = 12_180_000    // .dev in the sandbox
		limit   = price * 5 / 2 // 2.5 × the price: two fit, a third does not
		budget  = "30.45"       // the same, as config text
		agents  = servers / 2   // two processes per agent
		reason  = "shared ledger test: a launch page bought exactly once per slot"
	)
	var names []string
	for i := range agents {
		names = append(names, fmt.Sprintf("web-bot-%d", i))
	}
	e := newCrashEnvWith(t, crashConfig{agents: names, wait: "3m", budget: budget})

	procs := make([]*serveProc, servers)
	for i := range procs {
		procs[i] = e.serve("--agent", names[i%agents])
	}

	// Sample spent + held all along, from outside every server.
	var samples atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stopSampling:
				sampled <- nil
				return
			default:
			}
			sts, err := e.db.BudgetStatuses(context.Background(), ledger.TeamScope("web"))
			if err != nil || len(sts) != 1 {
				sampled <- fmt.Errorf("budget status: %+v %v", sts, err)
				return
			}
			if used := sts[0].Spent.Micros + sts[0].Held.Micros; used > limit {
				sampled <- fmt.Errorf("spent %d + held %d = %d is above the limit %d", sts[0].Spent.Micros, sts[0].Held.Micros, used, limit)
				return
			}
			samples.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()

	type outcome struct {
		i   int
		v   tools.OperationView
		err error
	}
	results := make(chan outcome, servers)
	start := make(chan struct{})
	for i, p := range procs {
		go func() {
			<-start
			v, err := p.call("register_domain", map[string]any{"domain": fmt.Sprintf("shared-%d.dev", i), "reason": reason})
			results <- outcome{i, v, err}
		}()
	}
	close(start)

	// Six answers come at once: refused by the budget.
	var blocked []outcome
	for len(blocked) < servers-2 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("server %d: %v", r.i, r.err)
			}
			if r.v.Status != "denied" || !strings.Contains(r.v.Error, "budget team:web") {
				t.Fatalf("server %d answered %s (%s) before any approval; want denied by the team budget", r.i, r.v.Status, r.v.Error)
			}
			blocked = append(blocked, r)
		case <-time.After(2 * time.Minute):
			t.Fatalf("only %d of %d refusals arrived", len(blocked), servers-2)
		}
	}
	// Two wait inside their servers for a human.
	waiting := e.awaitingApproval("two operations awaiting approval", 2)
	for _, op := range waiting {
		reqID := e.requestID(op.ID)
		out, err := e.plainCLI("approvals", "approve", reqID, "--as", "bob", "--no-wait")
		if err != nil || !strings.Contains(out, "approved by bob") {
			t.Fatalf("approvals approve %s --db: %v\n%s", reqID, err, out)
		}
	}
	for range 2 {
		select {
		case r := <-results:
			if r.err != nil || r.v.Status != "succeeded" || r.v.Charged == nil || r.v.Charged.Micros != price {
				t.Fatalf("server %d: the waiting call ended %+v, %v; want succeeded once the CLI approved", r.i, r.v, r.err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("a call waiting in a stdio server was not resumed by the CLI approval")
		}
	}

	// The same idempotency key from two processes of the same agent, at once.
	// (A call without a key is matched to an earlier one only while that one
	// is not refused, so a refusal this quick cannot show it across
	// processes: the ledger's TestExactAcrossProcesses does, with handles.)
	{
		key := "same-key-everywhere"
		args := map[string]any{"domain": "shared-again.dev", "reason": reason, "idempotency_key": key}
		var wg sync.WaitGroup
		got := make([]tools.OperationView, 2)
		errs := make([]error, 2)
		for j, p := range []*serveProc{procs[0], procs[agents]} { // both web-bot-0
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[j], errs[j] = p.call("register_domain", args)
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil || got[0].OperationID != got[1].OperationID || got[0].OperationID == "" {
			t.Fatalf("key %q from two processes: %+v %v / %+v %v; want one operation", key, got[0], errs[0], got[1], errs[1])
		}
	}

	close(stopSampling)
	if err := <-sampled; err != nil {
		t.Fatal(err)
	}
	if samples.Load() == 0 {
		t.Fatal("the budget was never sampled")
	}
	spent, held := e.teamSpend()
	if spent != 2*price || held != 0 {
		t.Fatalf("spent %d held %d, want exactly two registrations' %d", spent, held, 2*price)
	}
	if n := len(e.sandboxState().Registrations()); n != 2 {
		t.Fatalf("%d registrations at the sandbox, want 2", n)
	}
	for i, p := range procs {
		t0 := time.Now()
		p.stop()
		t.Logf("server %d stopped in %s", i, time.Since(t0))
	}
	e.checkLedgerMatchesSandbox()
	t.Logf("%d budget samples, all within the limit", samples.Load())
}

// TestAttackSymlinkedDatabaseSecondServer is issue 9's sixth attack: a server
// is executing a registration (the registrar has acted; its answer is held
// by the sandbox) when a second server starts on a symlink to its database.
// The second serves — there is no one-server rule — but its start-up
// takeover and token sweep leave the first's live operation and token alone.
// A command on a hard link to the database is refused, naming the links.
// Only once the first is killed does the second take the work over: it asks
// Cloudflare, finds the registration and charges it once.
func TestAttackSymlinkedDatabaseSecondServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real tollgate, sandbox and Cerbos processes; skipped with -short")
	}
	t.Parallel()
	const price = 12_180_000
	e := newCrashEnv(t)
	first := e.serve()
	v := first.registerDomain("symlink-attack.dev")
	reqID := e.requestID(v.OperationID)
	e.setFaults(`{"hang":true,"fail_after_effect":true,"method":"POST","path_contains":"/registrar/registrations"}`)
	e.approve(reqID)
	e.waitFor("the registration to be held mid-call", func() bool {
		return e.hanging() == 1 && e.operation(v.OperationID).State == ledger.StateExecuting
	})
	op := e.operation(v.OperationID)
	tokens := e.tokensOf(op.LeaseID)
	if len(tokens) == 0 {
		t.Fatal("the executing server holds no token")
	}

	db := filepath.Join(e.dir, "tollgate.db")
	link := filepath.Join(t.TempDir(), "innocent-looking.db")
	if err := os.Symlink(db, link); err != nil {
		t.Fatal(err)
	}
	second := e.serve("--db", link)
	if got := e.operation(v.OperationID); got.State != ledger.StateExecuting || got.LeaseID != op.LeaseID {
		t.Fatalf("the second server took the live operation: %s (%s) under lease %q", got.State, got.Error, got.LeaseID)
	}
	if got := e.tokensOf(op.LeaseID); !containsAll(got, tokens) {
		t.Fatalf("the second server deleted the first's live token: %v, were %v", got, tokens)
	}

	hard := filepath.Join(e.dir, "hard-link.db")
	if err := os.Link(db, hard); err != nil {
		t.Fatal(err)
	}
	out, err := e.cli("budget", "list", "--db", hard)
	if err == nil || !strings.Contains(out, "hard links") {
		t.Fatalf("a command on a hard link to the database: %v\n%s", err, out)
	}
	if err := os.Remove(hard); err != nil {
		t.Fatal(err)
	}

	e.setFaults(`{}`)
	first.kill()
	e.waitFor("the held request to end", func() bool { return e.hanging() == 0 })
	got := second.waitTerminal(v.OperationID)
	if got.Status != "succeeded" || got.Charged == nil || got.Charged.Micros != price {
		t.Fatalf("the registration ended %s (%s), charged %+v; want succeeded, charged once", got.Status, got.Error, got.Charged)
	}
	e.waitLeaseGone(op.LeaseID)
	second.stop()
	e.checkLedgerMatchesSandbox()
}

// TestAttackDeletedWALRecoveryAsksCloudflare is issue 9's fifth attack: an
// approved registration is bought and settled, but everything the server
// wrote since the last checkpoint is lost with its write-ahead log, deleted
// under the running server. That server then refuses to act, naming the
// file; it is killed, and the database a restart finds says the operation is
// approved, its single-use approval spent, nothing executed. The restart
// must ask Cloudflare first, find the registration, and charge it once —
// never execute it again, never record "failed, nothing charged".
func TestAttackDeletedWALRecoveryAsksCloudflare(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real tollgate, sandbox and Cerbos processes; skipped with -short")
	}
	t.Parallel()
	ctx := context.Background()
	const price = 12_180_000
	e := newCrashEnv(t)
	dbPath := filepath.Join(e.dir, "tollgate.db")
	first := e.serve()
	v := first.registerDomain("wal-attack.dev")
	reqID := e.requestID(v.OperationID)

	// Slow down the execution's token mint, and catch the database between
	// the approval being spent and anything reaching the registrar.
	e.setFaults(`{"latency":"10s","method":"POST","path_contains":"/tokens"}`)
	e.approve(reqID)
	e.waitFor("the approval to be spent", func() bool {
		var consumed bool
		err := e.db.Store().QueryRowContext(ctx, `SELECT consumed_at IS NOT NULL FROM approval_requests WHERE id = ?`, reqID).Scan(&consumed)
		return err == nil && consumed
	})
	if op := e.operation(v.OperationID); op.State != ledger.StateApproved {
		t.Fatalf("checkpoint taken in %s, want approved", op.State)
	}
	var busy, logFrames, moved int
	if err := e.db.Store().Backend().Writer().QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &moved); err != nil || busy != 0 {
		t.Fatalf("checkpoint: busy %d, %v", busy, err)
	}
	e.setFaults(`{}`)
	if got := first.waitTerminal(v.OperationID); got.Status != "succeeded" {
		t.Fatalf("the registration ended %s (%s)", got.Status, got.Error)
	}
	if n := len(e.sandboxState().Registrations()); n != 1 {
		t.Fatalf("%d registrations", n)
	}

	// The attack: this test's own handle goes first (it would keep the log
	// alive for SQLite), then the log itself, under the running server.
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dbPath + "-wal"); err != nil {
		t.Fatal(err)
	}
	ctxCall, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = "register_domain"
	req.Params.Arguments = map[string]any{"domain": "wal-attack-two.dev", "reason": crashReason}
	res, err := first.c.CallTool(ctxCall, req)
	if err != nil || !res.IsError || !strings.Contains(fmt.Sprint(res.Content), "write-ahead log") {
		t.Fatalf("a call after the log was deleted: %v %+v; want a refusal naming the write-ahead log", err, res)
	}
	first.kill()

	second := e.serve()
	var reopenErr error
	if e.db, reopenErr = ledger.Open(ctx, dbPath, ledger.WithMigrations(approvals.Migrations), ledger.WithLogger(slog.New(slog.DiscardHandler))); reopenErr != nil {
		t.Fatal(reopenErr)
	}
	got := second.waitTerminal(v.OperationID)
	if got.Status != "succeeded" || got.Charged == nil || got.Charged.Micros != price {
		t.Fatalf("after the restart: %s (%s), charged %+v; want succeeded and charged once", got.Status, got.Error, got.Charged)
	}
	// What survived the deleted log depends on how much of it the
	// background checkpointer had copied into the database file: the
	// operation is found approved (resumed: Cloudflare asked first) or
	// executing (in_doubt: reconciled, Cloudflare asked first). Either way
	// the restart asks Cloudflare before it settles.
	var found, inDoubt, inspected bool
	if err := e.db.Events(ctx, ledger.EventQuery{OperationID: v.OperationID}, func(ev ledger.Event) error {
		switch {
		case ev.Type == "recovery.found_at_cloudflare":
			found = true
		case ev.Type == ledger.EventOperationState && strings.Contains(string(ev.Data), `"to":"in_doubt"`):
			inDoubt = true
		case ev.Type == "token.minted" && inDoubt && strings.Contains(string(ev.Data), `"purpose":"inspect"`):
			inspected = true
		case ev.Type == ledger.EventOperationState && strings.Contains(string(ev.Data), `"to":"succeeded"`) && inDoubt && !inspected:
			return fmt.Errorf("settled from in_doubt without asking Cloudflare")
		}
		return nil
	}); err != nil || !(found || inspected) {
		t.Fatalf("no recovery.found_at_cloudflare event nor an in_doubt reconciliation under an inspect token (%v): the restart did not ask Cloudflare first", err)
	}
	if n := len(e.sandboxState().Registrations()); n != 1 {
		t.Fatalf("%d registrations after the restart, want the one bought before", n)
	}
	second.stop()
	e.checkLedgerMatchesSandbox()
}
