//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/store/storetest"
	"github.com/tollgatehq/tollgate/tools"
)

// TestReplicasShareOnePostgres is issue 10's acceptance on PostgreSQL: two
// `tollgate serve` replicas on one PostgreSQL database (short lease TTL),
// with calls alternating between them, race for a team budget of 2.5 × the
// price of a domain: exactly two reservations fit and wait for a human, the
// others are refused naming the budget, and spent + held never exceeds the
// limit at any sampled moment. Approvals given with the CLI and nothing but
// --db (the URL) resume the calls waiting in the replicas. Then the replica
// executing a registration is SIGKILLed mid-call: the other leaves the live
// work alone for well over the TTL, and once the lease is dead reconciles it
// with Cloudflare first: succeeded, charged once.
//
// The replicas serve MCP over stdio here: the storage, lease and change feed
// paths are the ones HTTP replicas behind a load balancer use.
func TestReplicasShareOnePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two tollgate replicas, a sandbox, Cerbos and PostgreSQL; skipped with -short")
	}
	t.Parallel()
	const (
		price  = 12_180_000    // .dev in the sandbox
		limit  = price * 5 / 2 // two fit, a third does not
		calls  = 6
		ttl    = "2s"
		reason = "replica test: a launch page bought exactly once per slot"
	)
	dsn := storetest.PostgresDSN(t)
	e := newCrashEnvWith(t, crashConfig{agents: []string{"web-bot-0", "web-bot-1"}, wait: "3m", budget: "30.45", db: dsn})
	replicas := []*serveProc{
		e.serve("--agent", "web-bot-0", "--lease-ttl", ttl),
		e.serve("--agent", "web-bot-1", "--lease-ttl", ttl),
	}

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
			time.Sleep(2 * time.Millisecond)
		}
	}()

	type outcome struct {
		i   int
		v   tools.OperationView
		err error
	}
	results := make(chan outcome, calls)
	start := make(chan struct{})
	for i := range calls {
		p := replicas[i%2]
		go func() {
			<-start
			v, err := p.call("register_domain", map[string]any{"domain": fmt.Sprintf("replica-%d.dev", i), "reason": reason})
			results <- outcome{i, v, err}
		}()
	}
	close(start)
	for range calls - 2 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("call %d: %v", r.i, r.err)
			}
			if r.v.Status != "denied" || !strings.Contains(r.v.Error, "budget team:web") {
				t.Fatalf("call %d answered %s (%s) before any approval; want denied by the team budget", r.i, r.v.Status, r.v.Error)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("the refusals did not all arrive")
		}
	}
	waiting := e.awaitingApproval("two operations awaiting approval", 2)
	for _, op := range waiting {
		reqID := e.requestID(op.ID)
		out, err := e.plainCLI("approvals", "approve", reqID, "--as", "bob")
		if err != nil || !strings.Contains(out, "approved by bob") {
			t.Fatalf("approvals approve %s --db URL: %v\n%s", reqID, err, out)
		}
	}
	for range 2 {
		select {
		case r := <-results:
			if r.err != nil || r.v.Status != "succeeded" || r.v.Charged == nil || r.v.Charged.Micros != price {
				t.Fatalf("call %d: the waiting call ended %+v, %v; want succeeded once the CLI approved", r.i, r.v, r.err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("a call waiting in a replica was not resumed by the CLI approval")
		}
	}
	close(stopSampling)
	if err := <-sampled; err != nil {
		t.Fatal(err)
	}
	if spent, held := e.teamSpend(); spent != 2*price || held != 0 {
		t.Fatalf("spent %d held %d, want exactly two registrations' %d", spent, held, 2*price)
	}

	// Room for one more, then a registration held mid-call in replica A.
	if out, err := e.plainCLI("budget", "set", "--scope", "team:web", "--window", "day", "--limit", "100.00"); err != nil {
		t.Fatalf("budget set: %v\n%s", err, out)
	}
	go func() {
		_, _ = replicas[0].call("register_domain", map[string]any{"domain": "replica-kill.dev", "reason": reason})
	}()
	opID := e.awaitingApproval("the third registration to await approval", 1)[0].ID
	e.setFaults(`{"hang":true,"fail_after_effect":true,"method":"POST","path_contains":"/registrar/registrations"}`)
	e.approve(e.requestID(opID))
	e.waitFor("the registration to be held mid-call", func() bool {
		return e.hanging() == 1 && e.operation(opID).State == ledger.StateExecuting
	})
	// Whichever replica saw the decision first executes it: find it by the
	// lease the operation records.
	lease := e.operation(opID).LeaseID
	holder, survivor := -1, -1
	leases, err := e.db.Store().Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		for i, r := range replicas {
			if l.ID == lease && l.PID == r.cmd.Process.Pid {
				holder, survivor = i, 1-i
			}
		}
	}
	if holder < 0 {
		t.Fatalf("no replica holds lease %q: %+v", lease, leases)
	}
	// Several TTLs with the holder alive: the other must not touch its work.
	time.Sleep(3 * 2 * time.Second)
	if got := e.operation(opID); got.State != ledger.StateExecuting || got.LeaseID != lease {
		t.Fatalf("a replica took live work: %s (%s) under lease %q, was %q", got.State, got.Error, got.LeaseID, lease)
	}
	e.setFaults(`{}`)
	replicas[holder].kill()
	e.waitFor("the held request to end", func() bool { return e.hanging() == 0 })
	// The survivor acts for another agent, so the test reads the ledger.
	e.waitFor("the survivor to reconcile the killed replica's registration", func() bool {
		return e.operation(opID).State.Terminal()
	})
	if got := e.operation(opID); got.State != ledger.StateSucceeded || got.Charged == nil || got.Charged.Micros != price {
		t.Fatalf("the killed replica's registration ended %s (%s), charged %+v; want succeeded, charged once", got.State, got.Error, got.Charged)
	}
	e.waitLeaseGone(lease)
	if spent, held := e.teamSpend(); spent != 3*price || held != 0 {
		t.Fatalf("spent %d held %d, want three registrations' %d", spent, held, 3*price)
	}
	if n := len(e.sandboxState().Registrations()); n != 3 {
		t.Fatalf("%d registrations at the sandbox, want 3", n)
	}
	replicas[survivor].stop()
	e.checkLedgerMatchesSandbox()
	t.Logf("%d budget samples, all within the limit", samples.Load())
}

// TestPostgresURLSelectedEverywhereAndPasswordHidden: --db, TOLLGATE_DB and
// db: in tollgate.yaml each select PostgreSQL; a database that cannot be
// reached is named in the error without its password.
func TestPostgresURLSelectedEverywhereAndPasswordHidden(t *testing.T) {
	t.Parallel()
	const url = "postgres://tollgate:s3cr3t-pw@127.0.0.1:1/tollgate?sslmode=disable&connect_timeout=2"
	bin := tollgateBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("db: %q\n", url)), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		args []string
		env  []string
	}{
		"flag": {args: []string{"--db", url}},
		"env":  {env: []string{"TOLLGATE_DB=" + url}},
		"yaml": {args: []string{"--config", cfg}},
	} {
		cmd := exec.Command(bin, append([]string{"budget", "list"}, c.args...)...)
		cmd.Dir = dir
		cmd.Env = append(append(os.Environ(), "TOLLGATE_AUDIT_KEY_FILE="+filepath.Join(dir, "audit.key")), c.env...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("%s: budget list on an unreachable database succeeded:\n%s", name, out)
		}
		if strings.Contains(string(out), "s3cr3t-pw") {
			t.Errorf("%s: the password is shown:\n%s", name, out)
		}
		if !strings.Contains(string(out), "postgres://tollgate:xxxxx@127.0.0.1:1/tollgate") {
			t.Errorf("%s: the error does not name the PostgreSQL database:\n%s", name, out)
		}
	}
}
