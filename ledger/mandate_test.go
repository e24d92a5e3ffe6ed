package ledger

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMandatePatterns(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		pattern, name string
		match         bool
	}{
		{"*.dev", "launch.dev", true}, {"*.dev", ".dev", false}, {"*.dev", "launch.app", false}, {"*.dev", "x.dev.app", false},
		{"shop-*", "shop-api", true}, {"shop-*", "shop-", false}, {"shop-*", "myshop-api", false},
		{"launch.dev", "launch.dev", true}, {"launch.dev", "xlaunch.dev", false},
	} {
		if got := MatchesPattern(tt.pattern, tt.name); got != tt.match {
			t.Errorf("MatchesPattern(%q, %q) = %v", tt.pattern, tt.name, got)
		}
	}
	for _, bad := range []string{"", "*", "*shop*", "a*b", "Shop-*", "shop_*", "**.dev", "*.dev\n"} {
		if err := ValidMandatePattern(bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
	for _, good := range []string{"*.dev", "shop-*", "launch.dev", "web-api"} {
		if err := ValidMandatePattern(good); err != nil {
			t.Errorf("pattern %q: %v", good, err)
		}
	}
}

func TestMandateValidation(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	now := time.Now()
	_, err := db.CreateMandate(context.Background(), Mandate{Agent: "web-bot", Action: "register_domain", Pattern: "*",
		MaxPerCall: usd("30"), MaxTotal: usd("20"), Count: 0, ExpiresAt: now.Add(8 * 24 * time.Hour)})
	for _, want := range []string{"matches everything", "above max total", "count 0", "more than 7 days", "approver who creates it"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}

// TestMandateConsumedAtomically: a mandate of count 3 covers exactly 3 of
// 8 racing reservations that match it; the others reserve without one (they
// wait for a human), and neither a revoked mandate nor another agent's,
// action's or pattern's covers anything.
func TestMandateConsumedAtomically(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		db := openTest(t)
		m, err := db.CreateMandate(ctx, Mandate{Agent: "web-bot", Action: "register_domain", Pattern: "*.dev",
			MaxPerCall: usd("15"), MaxTotal: usd("100"), Count: 3, CreatedBy: "bob", ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		const racers = 8
		used := make([]string, racers)
		var wg sync.WaitGroup
		for i := range racers {
			op := authorizedOp(t, db, "web-bot", "web")
			wg.Go(func() {
				if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Action: "register_domain", Amount: usd("12.18"), MandateResource: "race.dev"}); err != nil {
					t.Error(err)
					return
				}
				id, err := db.MandateOf(ctx, op.ID)
				if err != nil {
					t.Error(err)
				}
				used[i] = id
			})
		}
		wg.Wait()
		n := 0
		for _, id := range used {
			if id == m.ID {
				n++
			} else if id != "" {
				t.Errorf("used an unknown mandate %q", id)
			}
		}
		if n != 3 {
			t.Fatalf("%d of %d racing reservations used the mandate of count 3", n, racers)
		}
		ms, err := db.Mandates(ctx)
		if err != nil || len(ms) != 1 || ms[0].Used != 3 || ms[0].UsedMicros != 3*12_180_000 || ms[0].Active(time.Now()) {
			t.Fatalf("mandates %+v %v", ms, err)
		}
		if got := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE type = ?`, EventMandateUsed); got != 3 {
			t.Errorf("%d mandate.used events, want 3", got)
		}

		// Nothing else is covered by a fresh one that does not match.
		other, err := db.CreateMandate(ctx, Mandate{Agent: "web-bot", Action: "register_domain", Pattern: "shop-*",
			MaxPerCall: usd("15"), MaxTotal: usd("100"), Count: 3, CreatedBy: "bob", ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ agent, action, resource, amount string }{
			{"ops-bot", "register_domain", "shop-1.dev", "1"},      // another agent
			{"web-bot", "deploy_worker", "shop-api", "1"},          // another action
			{"web-bot", "register_domain", "launch.dev", "1"},      // outside the pattern
			{"web-bot", "register_domain", "shop-pricey", "15.01"}, // above the per-call maximum
		} {
			op := authorizedOp(t, db, c.agent, "web")
			if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Action: c.action, Amount: usd(c.amount), MandateResource: c.resource}); err != nil {
				t.Fatal(err)
			}
			if id, _ := db.MandateOf(ctx, op.ID); id != "" {
				t.Errorf("%+v used mandate %s", c, id)
			}
		}
		if _, err := db.RevokeMandate(ctx, other.ID, "bob"); err != nil {
			t.Fatal(err)
		}
		op := authorizedOp(t, db, "web-bot", "web")
		if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Action: "register_domain", Amount: usd("1"), MandateResource: "shop-1"}); err != nil {
			t.Fatal(err)
		}
		if id, _ := db.MandateOf(ctx, op.ID); id != "" {
			t.Errorf("a revoked mandate covered %s", op.ID)
		}
		mustInvariants(t, db, true)
	})
}

// TestMandateUseReturnedOnRelease: an operation a mandate covered that ends
// without a charge gives its use and amount back in the release's
// transaction, audited once with the mandate's id; a settled one keeps its
// use, and releasing twice returns nothing twice.
func TestMandateUseReturnedOnRelease(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		db := openTest(t)
		m, err := db.CreateMandate(ctx, Mandate{Agent: "web-bot", Action: "register_domain", Pattern: "*.dev",
			MaxPerCall: usd("15"), MaxTotal: usd("15"), Count: 1, CreatedBy: "bob", ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		mandate := func() Mandate {
			t.Helper()
			ms, err := db.Mandates(ctx)
			if err != nil || len(ms) != 1 {
				t.Fatalf("mandates %+v %v", ms, err)
			}
			return ms[0]
		}
		reserve := func() Operation {
			t.Helper()
			op := authorizedOp(t, db, "web-bot", "web")
			op, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Action: "register_domain", Amount: usd("12.18"), MandateResource: "back.dev"})
			if err != nil {
				t.Fatal(err)
			}
			if id, _ := db.MandateOf(ctx, op.ID); id != m.ID {
				t.Fatalf("%s reserved without the mandate (%q)", op.ID, id)
			}
			return op
		}

		// Used, then the execution fails: the use comes back with the release.
		failed := reserve()
		if got := mandate(); got.Used != 1 || got.UsedMicros != 12_180_000 || got.Active(time.Now()) {
			t.Fatalf("after the reservation: %+v", got)
		}
		if err := execute(ctx, db, failed.ID, false); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Release(ctx, failed.ID, StateFailed, "registry_rejected", "the registry rejected it"); err != nil {
			t.Fatal(err)
		}
		if got := mandate(); got.Used != 0 || got.UsedMicros != 0 || !got.Active(time.Now()) {
			t.Fatalf("after a release without a charge: %+v", got)
		}
		if n := countEvents(t, db, EventMandateUseReturned, func(_ string, d map[string]any) bool {
			return d["mandate_id"] == m.ID && d["amount"] == "12.18 USD" && d["code"] == "registry_rejected"
		}); n != 1 {
			t.Fatalf("%d mandate.use_returned events with the id, amount and code, want 1", n)
		}
		// A second release is a state conflict and gives nothing back twice.
		if _, err := db.Release(ctx, failed.ID, StateFailed, "again", "again"); err == nil {
			t.Fatal("released twice")
		}
		// The operation still says which mandate approved it.
		if id, _ := db.MandateOf(ctx, failed.ID); id != m.ID {
			t.Errorf("MandateOf a returned use = %q", id)
		}

		// The use given back covers the next call, which settles and keeps it.
		settled := reserve()
		if err := execute(ctx, db, settled.ID, false); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Settle(ctx, settled.ID, SettleRequest{Actual: usd("12.18")}); err != nil {
			t.Fatal(err)
		}
		if got := mandate(); got.Used != 1 || got.UsedMicros != 12_180_000 || got.Active(time.Now()) {
			t.Fatalf("after a settled use: %+v", got)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE type = ?`, EventMandateUseReturned); n != 1 {
			t.Errorf("%d mandate.use_returned events after a settle, want still 1", n)
		}
		// Used up: the next matching reservation is not covered.
		op := authorizedOp(t, db, "web-bot", "web")
		if _, err := db.Reserve(ctx, ReserveRequest{OperationID: op.ID, Action: "register_domain", Amount: usd("1"), MandateResource: "more.dev"}); err != nil {
			t.Fatal(err)
		}
		if id, _ := db.MandateOf(ctx, op.ID); id != "" {
			t.Errorf("a used-up mandate covered %s", op.ID)
		}
		mustInvariants(t, db, true)
	})
}
