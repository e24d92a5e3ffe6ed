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
