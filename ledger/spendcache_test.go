package ledger

import (
	"context"
	"testing"
	"time"
)

// TestCheckBudgetSnapshot: an estimate's budget check is served from memory
// while nothing but audit records committed, and sees every state change of
// this process at once and another process's once the change watch saw it.
func TestCheckBudgetSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newClock(nov22)
	dbs := handles(t, 2, WithClock(clock.Now))
	db, other := dbs[0], dbs[1]
	setBudget(t, db, AgentScope("a"), WindowDay, "10")
	req := ReserveRequest{Agent: "a", Team: "t", Action: "register_domain", Amount: usd("6")}
	check := func(wantReads uint64) ([]BudgetStatus, *BlockedError) {
		t.Helper()
		st, blocked, err := db.CheckBudget(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if got := db.spendSnapshots.reads.Load(); got != wantReads {
			t.Fatalf("snapshot reads = %d, want %d", got, wantReads)
		}
		return st, blocked
	}
	// Quiesce the watch's first wake-up (it moves the generation once).
	changes, stop := db.Store().Subscribe()
	defer stop()
	<-changes
	drain := func() {
		for {
			select {
			case <-changes:
			default:
				return
			}
		}
	}
	drain()
	reads := db.spendSnapshots.reads.Load()

	// Nothing committed between two checks: the second is served from
	// memory. (Should a background write of the store — a lease renewal —
	// move the generation meanwhile, the second check reads afresh; the
	// count is only asserted when it did not.)
	gen := db.Store().Generation()
	if st, blocked := check(reads + 1); blocked != nil || st[0].Remaining != usd("10") {
		t.Fatalf("first check: %+v %v", st, blocked)
	}
	if _, _, err := db.CheckBudget(ctx, req); err != nil {
		t.Fatal(err)
	}
	if db.Store().Generation() == gen {
		if got := db.spendSnapshots.reads.Load(); got != reads+1 {
			t.Fatalf("an unchanged database was read again: %d snapshot reads, want %d", got, reads+1)
		}
	}
	// A reservation of this process is seen by the very next check.
	reserveOK(t, db, "a", "t", "register_domain", "4")
	st, blocked, err := db.CheckBudget(ctx, req)
	if err != nil || blocked != nil || st[0].Remaining != usd("6") || st[0].Held != usd("4") {
		t.Fatalf("after a reservation: %+v %v %v", st, blocked, err)
	}
	_, blocked, _ = db.CheckBudget(ctx, ReserveRequest{Agent: "a", Team: "t", Action: "register_domain", Amount: usd("6.01")})
	if blocked == nil || blocked.Kind != BlockBudget {
		t.Fatalf("6.01 of 6 left: %v", blocked)
	}
	// So is a freeze of this process.
	if _, err := db.Freeze(ctx, AgentScope("a"), "test", "human:ops"); err != nil {
		t.Fatal(err)
	}
	if _, blocked, _ := db.CheckBudget(ctx, req); blocked == nil || blocked.Kind != BlockFrozen {
		t.Fatalf("after a freeze: %v", blocked)
	}
	if err := db.Unfreeze(ctx, AgentScope("a"), "human:ops"); err != nil {
		t.Fatal(err)
	}
	if _, blocked, _ := db.CheckBudget(ctx, req); blocked != nil {
		t.Fatalf("after the unfreeze: %v", blocked)
	}
	// Another process's budget change is seen once the watch reports a change.
	drain()
	setBudget(t, other, AgentScope("a"), WindowDay, "5")
	guard := time.After(30 * time.Second)
	for {
		_, blocked, err := db.CheckBudget(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if blocked != nil && blocked.Kind == BlockBudget {
			break
		}
		select {
		case <-changes:
		case <-guard:
			t.Fatal("another process's budget change never reached the estimate's check")
		}
	}
	// A new day is a new period: the snapshot is not served across
	// midnight, though nothing was written.
	setBudget(t, db, AgentScope("a"), WindowDay, "10")
	ten := ReserveRequest{Agent: "a", Team: "t", Action: "register_domain", Amount: usd("10")}
	if _, blocked, _ := db.CheckBudget(ctx, ten); blocked == nil || blocked.Kind != BlockBudget {
		t.Fatalf("10 with 4 held of 10 today: %v", blocked)
	}
	clock.Advance(24 * time.Hour)
	if _, blocked, err := db.CheckBudget(ctx, ten); err != nil || blocked != nil {
		t.Fatalf("10 of 10 tomorrow: %v %v", blocked, err)
	}
}
