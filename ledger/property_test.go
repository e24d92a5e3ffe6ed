package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
)

// lifecycle drives one operation through a random path after reserving it and
// reports whether it ended settled. Every error other than a block is a failure.
func lifecycle(ctx context.Context, db *DB, rng *rand.Rand, agent, team string, step func() error) (settled bool, err error) {
	amount := money.Money{Micros: int64(rng.IntN(5_000_000)), Currency: "USD"}
	op, err := pipelineOp(ctx, db, agent, team, "register_domain", amount)
	var be *BlockedError
	if errors.As(err, &be) {
		return false, step()
	}
	if err != nil {
		return false, fmt.Errorf("reserve: %w", err)
	}
	if err := step(); err != nil {
		return false, err
	}
	moves := []State{StateAwaitingApproval, StateApproved, StateExecuting}
	depth := rng.IntN(len(moves) + 1)
	for _, s := range moves[:depth] {
		if _, err := db.Transition(ctx, op.ID, s, TransitionOpts{}); err != nil {
			return false, fmt.Errorf("to %s: %w", s, err)
		}
		if err := step(); err != nil {
			return false, err
		}
	}
	if depth == len(moves) && rng.IntN(4) == 0 {
		if _, err := db.Transition(ctx, op.ID, StateInDoubt, TransitionOpts{}); err != nil {
			return false, fmt.Errorf("to in_doubt: %w", err)
		}
		if err := step(); err != nil {
			return false, err
		}
	}
	if depth == len(moves) && rng.IntN(5) > 0 {
		actual := money.Money{Micros: rng.Int64N(op.Quote.Micros + 1), Currency: "USD"} // at most the quote
		if _, err := db.Settle(ctx, op.ID, SettleRequest{Actual: actual}); err != nil {
			return false, fmt.Errorf("settle: %w", err)
		}
		// A second settle or a release afterwards must change nothing.
		if _, err := db.Settle(ctx, op.ID, SettleRequest{Actual: actual}); !errors.Is(err, ErrStateConflict) {
			return false, fmt.Errorf("second settle: %v", err)
		}
		if _, err := db.Release(ctx, op.ID, StateFailed, "x", "y"); !errors.Is(err, ErrStateConflict) {
			return false, fmt.Errorf("release after settle: %v", err)
		}
		return true, step()
	}
	to := []State{StateFailed, StateCancelled, StateDenied, StateExpired}[rng.IntN(4)]
	if !CanMove(mustState(ctx, db, op.ID), to) {
		to = StateFailed
	}
	if _, err := db.Release(ctx, op.ID, to, "test", "released by the property test"); err != nil {
		return false, fmt.Errorf("release to %s: %w", to, err)
	}
	if _, err := db.Settle(ctx, op.ID, SettleRequest{Actual: amount}); !errors.Is(err, ErrStateConflict) {
		return false, fmt.Errorf("settle after release: %v", err)
	}
	return false, step()
}

func mustState(ctx context.Context, db *DB, id string) State {
	op, err := db.Operation(ctx, id)
	if err != nil {
		return ""
	}
	return op.State
}

// TestPropertyRandomInterleavings runs random reserve/settle/release paths in many
// goroutines against overlapping agent, team and global budgets and checks every
// invariant, from one consistent snapshot, after every single step.
func TestPropertyRandomInterleavings(t *testing.T) {
	t.Parallel()
	eachBackend(t, testPropertyRandomInterleavings)
}

func testPropertyRandomInterleavings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, WithAutoFreeze(0, 0))
	for i := range 4 {
		setBudget(t, db, AgentScope(fmt.Sprintf("a%d", i)), WindowDay, "12")
	}
	setBudget(t, db, TeamScope("t0"), WindowMonth, "20")
	setBudget(t, db, TeamScope("t1"), WindowTotal, "18")
	setBudget(t, db, GlobalScope, WindowDay, "30")
	if err := db.SetLimit(ctx, VelocityLimit{Scope: AgentScope("a3"), Action: "register_domain", Window: WindowDay, Max: 6}, "t"); err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	workers, perWorker := 4, 8
	if testing.Short() {
		workers, perWorker = 3, 4
	}
	var wg sync.WaitGroup
	var steps atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(w)))
			step := func() error {
				steps.Add(1)
				return checkTotals(ctx, db, true)
			}
			for range perWorker {
				a := rng.IntN(4)
				if _, err := lifecycle(ctx, db, rng, fmt.Sprintf("a%d", a), fmt.Sprintf("t%d", a%2), step); err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d steps checked", steps.Load())
	mustInvariants(t, db, true)
	if n := countRows(t, db, `SELECT COUNT(*) FROM holds`); n != 0 {
		t.Fatalf("%d holds left", n)
	}
}

// TestInvariantCheckerCatchesCorruption proves the checker is not vacuous.
func TestInvariantCheckerCatchesCorruption(t *testing.T) {
	t.Parallel()
	eachBackend(t, testInvariantCheckerCatchesCorruption)
}

func testInvariantCheckerCatchesCorruption(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, corrupt := range []string{
		`UPDATE spend_totals SET held_micros = held_micros + 1`,
		`UPDATE spend_totals SET spent_micros = spent_micros + 1 WHERE win = 'total'`,
		`UPDATE velocity_totals SET count = count + 1`,
		`DELETE FROM holds WHERE win = 'day'`,
		`UPDATE operations SET state = 'failed' WHERE state = 'reserved'`,
		`UPDATE budgets SET limit_micros = 1`,
	} {
		db := openTest(t)
		setBudget(t, db, GlobalScope, WindowTotal, "100")
		settleOK(t, db, reserveOK(t, db, "a", "t", "register_domain", "3").ID, "3")
		reserveOK(t, db, "a", "t", "register_domain", "2")
		mustInvariants(t, db, true)
		if _, err := db.st.ExecContext(ctx, corrupt); err != nil {
			t.Fatal(err)
		}
		if err := checkInvariants(ctx, db, true); err == nil {
			t.Errorf("corruption %q not detected", corrupt)
		}
	}
}

// FuzzLedgerSequence interprets bytes as a sequence of ledger operations on one
// database and checks the invariants after each one.
func FuzzLedgerSequence(f *testing.F) {
	f.Add([]byte{0, 10, 1, 0, 1, 0, 1, 0, 2, 3})
	f.Add([]byte{0, 200, 0, 100, 0, 255, 3, 1, 4, 30, 0, 50})
	f.Add([]byte{0, 1, 0, 2, 0, 3, 0, 4, 1, 0, 1, 1, 5, 0, 1, 0, 6, 0, 2, 1})
	f.Add([]byte{0, 90, 1, 0, 1, 0, 1, 0, 7, 0, 2, 0, 4, 24, 0, 90, 8, 0})
	f.Add([]byte{5, 0, 0, 9, 5, 0, 0, 9, 0, 9, 0, 9, 0, 9, 0, 9})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 64 {
			prog = prog[:64]
		}
		ctx := context.Background()
		clk := newClock(time.Date(2026, 11, 30, 20, 0, 0, 0, time.UTC))
		db := openTest(t, WithClock(clk.Now), WithAutoFreeze(3, time.Hour))
		setBudget(t, db, AgentScope("a0"), WindowDay, "3")
		setBudget(t, db, TeamScope("t"), WindowMonth, "5")
		setBudget(t, db, GlobalScope, WindowTotal, "8")
		if err := db.SetLimit(ctx, VelocityLimit{Scope: AgentScope("a1"), Action: "register_domain", Window: WindowDay, Max: 2}, "t"); err != nil {
			t.Fatal(err)
		}
		var ops []string
		var other *DB
		pick := func(arg byte) (string, bool) {
			if len(ops) == 0 {
				return "", false
			}
			return ops[int(arg)%len(ops)], true
		}
		okErr := func(err error) bool {
			var be *BlockedError
			return err == nil || errors.Is(err, ErrStateConflict) || errors.As(err, &be) || errors.Is(err, ErrNotFound)
		}
		for i := 0; i+1 < len(prog); i += 2 {
			code, arg := prog[i]%9, prog[i+1]
			var err error
			switch code {
			case 0: // new reservation of arg/50 USD for one of three agents
				var op Operation
				op, err = pipelineOp(ctx, db, fmt.Sprintf("a%d", arg%3), "t", "register_domain", money.Money{Micros: int64(arg) * 20_000, Currency: "USD"})
				if op.ID != "" {
					ops = append(ops, op.ID)
				}
			case 1: // one step forward
				if id, ok := pick(arg); ok {
					next := map[State]State{StateReserved: StateAwaitingApproval, StateAwaitingApproval: StateApproved, StateApproved: StateExecuting}
					if to, ok := next[mustState(ctx, db, id)]; ok {
						_, err = db.Transition(ctx, id, to, TransitionOpts{})
					}
				}
			case 2: // settle at a fraction of the quote
				if id, ok := pick(arg); ok {
					op, _ := db.Operation(ctx, id)
					_, err = db.Settle(ctx, id, SettleRequest{Actual: money.Money{Micros: op.Quote.Micros * int64(arg%4) / 3, Currency: "USD"}})
				}
			case 3: // release
				if id, ok := pick(arg); ok {
					_, err = db.Release(ctx, id, []State{StateFailed, StateCancelled, StateExpired, StateDenied}[arg%4], "fuzz", "fuzz")
				}
			case 4: // time passes
				clk.Advance(time.Duration(arg) * 17 * time.Minute)
			case 5: // freeze or unfreeze an agent
				s := AgentScope(fmt.Sprintf("a%d", arg%3))
				if arg%2 == 0 {
					_, err = db.Freeze(ctx, s, "fuzz", "fuzz")
				} else if err = db.Unfreeze(ctx, s, "fuzz"); errors.Is(err, ErrNotFound) {
					err = nil
				}
			case 6: // executing -> in_doubt
				if id, ok := pick(arg); ok {
					_, err = db.Transition(ctx, id, StateInDoubt, TransitionOpts{From: []State{StateExecuting}})
				}
			case 7: // another process takes over the work no live lease holds
				if other == nil {
					other = openAt(t, db.Path(), WithClock(clk.Now))
					_, err = other.StartLease(ctx)
				}
				if err == nil {
					_, err = other.Reclaim(ctx)
				}
			case 8: // a dry run never writes
				_, _, err = db.CheckBudget(ctx, ReserveRequest{Agent: "a0", Team: "t", Action: "register_domain", Amount: money.Money{Micros: int64(arg) * 10_000, Currency: "USD"}})
			}
			if !okErr(err) {
				t.Fatalf("step %d (code %d arg %d): %v", i/2, code, arg, err)
			}
			if err := checkTotals(ctx, db, true); err != nil {
				t.Fatalf("after step %d (code %d arg %d): %v", i/2, code, arg, err)
			}
		}
		mustInvariants(t, db, true)
	})
}

// TestRaceTeamBudget: 200 goroutines across 20 agents of one team race to reserve
// against a team budget far smaller than their total.
func TestRaceTeamBudget(t *testing.T) { t.Parallel(); eachBackend(t, testRaceTeamBudget) }

func testRaceTeamBudget(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"settle-all", "mixed"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := openTest(t)
			setBudget(t, db, TeamScope("web"), WindowDay, "25")
			var (
				wg                  sync.WaitGroup
				settled, released   atomic.Int64
				blocked             atomic.Int64
				mu                  sync.Mutex
				ids                 []string
				price               = usd("1")
				goroutines, nAgents = 200, 20
			)
			start := make(chan struct{})
			for i := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					agent := fmt.Sprintf("agent-%02d", i%nAgents)
					op, err := pipelineOp(ctx, db, agent, "web", "register_domain", price)
					if op.ID != "" {
						mu.Lock()
						ids = append(ids, op.ID)
						mu.Unlock()
					}
					var be *BlockedError
					if errors.As(err, &be) {
						blocked.Add(1)
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					if mode == "mixed" && i%4 == 0 {
						if _, err := db.Release(ctx, op.ID, StateFailed, "cloudflare_error", "registrar refused"); err != nil {
							t.Error(err)
						}
						released.Add(1)
						return
					}
					if err := execute(ctx, db, op.ID, i%2 == 0); err != nil {
						t.Error(err)
						return
					}
					if _, err := db.Settle(ctx, op.ID, SettleRequest{Actual: price}); err != nil {
						t.Error(err)
						return
					}
					settled.Add(1)
				}()
			}
			close(start)
			wg.Wait()
			st := statusOf(t, db, TeamScope("web"), WindowDay)
			t.Logf("settled %d released %d blocked %d; spent %s held %s", settled.Load(), released.Load(), blocked.Load(), st.Spent, st.Held)
			if st.Held != usd("0") || st.Spent.Micros != settled.Load()*price.Micros || st.Spent.Micros > st.Budget.Limit.Micros {
				t.Fatalf("spent %s held %s for %d settled", st.Spent, st.Held, settled.Load())
			}
			if mode == "settle-all" && st.Spent != usd("25") {
				t.Fatalf("spent %s, want exactly 25.00 USD", st.Spent)
			}
			if int(settled.Load()+released.Load()+blocked.Load()) != goroutines || len(ids) != goroutines {
				t.Fatalf("outcomes %d+%d+%d, ops %d; want %d", settled.Load(), released.Load(), blocked.Load(), len(ids), goroutines)
			}
			for _, id := range ids {
				if s := mustState(ctx, db, id); !s.Terminal() {
					t.Fatalf("operation %s stuck in %s", id, s)
				}
			}
			mustInvariants(t, db, true)
		})
	}
}

// TestTwoHandlesOneFile: two *DB on one file (as two processes would have) share
// one budget correctly.
func TestTwoHandlesOneFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "shared.db")
	db1 := openAt(t, path)
	db2 := openAt(t, path)
	if err := db2.SetBudget(ctx, Budget{Scope: GlobalScope, Window: WindowTotal, Limit: usd("30")}, "cli:alice"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var settled atomic.Int64
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, other := db1, db2
			if i%2 == 1 {
				db, other = db2, db1
			}
			op, err := pipelineOp(ctx, db, fmt.Sprintf("a%d", i%4), "t", "register_domain", usd("1"))
			var be *BlockedError
			if errors.As(err, &be) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			// The other handle moves it on: state lives in the file, not in a handle.
			if err := execute(ctx, other, op.ID, false); err != nil {
				t.Error(err)
				return
			}
			if _, err := other.Settle(ctx, op.ID, SettleRequest{Actual: usd("1")}); err != nil {
				t.Error(err)
				return
			}
			settled.Add(1)
		}()
	}
	wg.Wait()
	if settled.Load() != 30 {
		t.Fatalf("%d settled, want exactly 30", settled.Load())
	}
	for _, db := range []*DB{db1, db2} {
		if st := statusOf(t, db, GlobalScope, WindowTotal); st.Spent != usd("30") || st.Held != usd("0") {
			t.Fatalf("status %+v", st)
		}
	}
	mustInvariants(t, db1, true)
}

// TestMultiProcess runs real child processes (this test binary, re-executed)
// reserving and settling against one file while the parent does the same.
func TestMultiProcess(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns processes")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "procs.db")
	// Every process appends to one keyed chain with the same key file.
	keyFile := filepath.Join(t.TempDir(), "audit.key")
	key, err := LoadOrCreateAuditKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	db := openAt(t, path, WithAuditKey(key))
	setBudget(t, db, TeamScope("web"), WindowTotal, "40")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const perProc = 25
	var cmds []*exec.Cmd
	for p := range 2 {
		cmd := exec.Command(exe, "-test.run=^TestHelperLedgerProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "LEDGER_HELPER_DB="+path, "LEDGER_HELPER_KEY="+keyFile, "LEDGER_HELPER_AGENT=proc"+strconv.Itoa(p), "LEDGER_HELPER_N="+strconv.Itoa(perProc))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	local := 0
	for range perProc {
		if _, err := pipelineOp(ctx, db, "parent", "web", "register_domain", usd("1")); err == nil {
			local++
		}
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	}
	st := statusOf(t, db, TeamScope("web"), WindowTotal)
	if st.Spent.Micros+st.Held.Micros != 40_000_000 {
		t.Fatalf("spent %s + held %s, want exactly 40 of 75 attempts", st.Spent, st.Held)
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM operations WHERE state IN ('succeeded', 'reserved')`); n != 40 {
		t.Fatalf("%d operations got through, want 40", n)
	}
	t.Logf("parent reserved %d", local)
	mustInvariants(t, db, true)
}

// TestHelperLedgerProcess is the child of TestMultiProcess; it does nothing when
// run normally.
func TestHelperLedgerProcess(t *testing.T) {
	path := os.Getenv("LEDGER_HELPER_DB")
	if path == "" {
		t.Skip("helper process for TestMultiProcess")
	}
	ctx := context.Background()
	key, err := LoadAuditKey(os.Getenv("LEDGER_HELPER_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	db := openAt(t, path, WithAuditKey(key))
	n, _ := strconv.Atoi(os.Getenv("LEDGER_HELPER_N"))
	agent := os.Getenv("LEDGER_HELPER_AGENT")
	for range n {
		op, err := pipelineOp(ctx, db, agent, "web", "register_domain", usd("1"))
		var be *BlockedError
		if errors.As(err, &be) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := execute(ctx, db, op.ID, false); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Settle(ctx, op.ID, SettleRequest{Actual: usd("1")}); err != nil {
			t.Fatal(err)
		}
	}
}
