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

// TestMandateForSnapshot: the estimate's mandate lookup is served from
// memory while nothing changed, sees a new mandate, a use and a revocation
// at once, and never offers a mandate past its expiry.
func TestMandateForSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newClock(nov22)
	db := openTest(t, WithClock(clock.Now))
	find := func() *Mandate {
		t.Helper()
		m, err := db.MandateFor(ctx, "web-bot", "register_domain", "shop.dev", usd("12.18"))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// Quiesce the watch's first wake-up (it moves the generation once).
	changes, stop := db.Store().Subscribe()
	defer stop()
	<-changes
	if m := find(); m != nil {
		t.Fatalf("no mandate yet, got %+v", m)
	}
	gen, reads := db.Store().Generation(), db.mandateSnapshots.reads.Load()
	find()
	if db.Store().Generation() == gen && db.mandateSnapshots.reads.Load() != reads {
		t.Fatal("an unchanged database was read again")
	}
	m, err := db.CreateMandate(ctx, Mandate{Agent: "web-bot", Action: "register_domain", Pattern: "*.dev",
		MaxPerCall: usd("15"), MaxTotal: usd("100"), Count: 1, CreatedBy: "bob", ExpiresAt: clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if got := find(); got == nil || got.ID != m.ID {
		t.Fatalf("the new mandate was not offered: %+v", got)
	}
	clock.Advance(time.Hour)
	if got := find(); got != nil {
		t.Fatalf("an expired mandate was offered: %+v", got)
	}
	clock.Advance(-time.Hour)
	op := authorizedOp(t, db, "web-bot", "web")
	if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Action: "register_domain", Amount: usd("12.18"), MandateResource: "shop.dev"}); err != nil {
		t.Fatal(err)
	}
	if got := find(); got != nil {
		t.Fatalf("a used-up mandate was offered: %+v", got)
	}
	m2, err := db.CreateMandate(ctx, Mandate{Agent: "web-bot", Action: "register_domain", Pattern: "*.dev",
		MaxPerCall: usd("15"), MaxTotal: usd("100"), Count: 3, CreatedBy: "bob", ExpiresAt: clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if got := find(); got == nil || got.ID != m2.ID {
		t.Fatalf("the second mandate was not offered: %+v", got)
	}
	if _, err := db.RevokeMandate(ctx, m2.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	if got := find(); got != nil {
		t.Fatalf("a revoked mandate was offered: %+v", got)
	}
}
