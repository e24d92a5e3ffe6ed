package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
)

// handles opens n handles on one new file: as far as SQLite's locking goes,
// n processes. Nothing a handle caches could make the others' writes invisible.
func handles(t *testing.T, n int, opts ...Option) []*DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tollgate.db")
	out := make([]*DB, n)
	for i := range out {
		out[i] = openAt(t, path, append([]Option{WithAutoFreeze(0, 0)}, opts...)...)
	}
	return out
}

// TestExactAcrossProcesses: every rule that must hold across all the
// tollgate processes on one database — budgets, velocity limits, explicit
// and derived idempotency keys, freezes — holds when the racers are spread
// over four handles, each with its own writer connection.
func TestExactAcrossProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const racers = 40

	// race reserves amount racers times at once across dbs, racer i for
	// agent(i) of team web, and counts the successes and the blocks by kind.
	race := func(t *testing.T, dbs []*DB, amount string, agent func(i int) string) (reserved int, blocks map[string]int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		blocks = map[string]int{}
		for i := range racers {
			wg.Go(func() {
				_, err := pipelineOp(ctx, dbs[i%len(dbs)], agent(i), "web", "register_domain", usd(amount))
				var be *BlockedError
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					reserved++
				case errors.As(err, &be):
					blocks[be.Kind]++
				default:
					t.Errorf("reserve: %v", err)
				}
			})
		}
		wg.Wait()
		return reserved, blocks
	}

	t.Run("budget", func(t *testing.T) {
		t.Parallel()
		dbs := handles(t, 4)
		setBudget(t, dbs[0], TeamScope("web"), WindowDay, "25")
		reserved, blocks := race(t, dbs, "2", func(i int) string { return "a" + string(rune('a'+i%8)) })
		if reserved != 12 || blocks[BlockBudget] != racers-12 {
			t.Fatalf("%d reserved, blocks %v; want exactly 12 of 2.00 in 25.00", reserved, blocks)
		}
		mustInvariants(t, dbs[3], true)
	})

	t.Run("velocity", func(t *testing.T) {
		t.Parallel()
		dbs := handles(t, 4)
		if err := dbs[0].SetLimit(ctx, VelocityLimit{Scope: AgentScope("a"), Action: "register_domain", Window: WindowDay, Max: 3}, "t"); err != nil {
			t.Fatal(err)
		}
		reserved, blocks := race(t, dbs, "1", func(int) string { return "a" })
		if reserved != 3 || blocks[BlockVelocity] != racers-3 {
			t.Fatalf("%d reserved, blocks %v under a limit of 3", reserved, blocks)
		}
	})

	for _, key := range []string{"explicit-key", ""} {
		t.Run("idempotency key "+map[bool]string{true: "derived", false: "explicit"}[key == ""], func(t *testing.T) {
			t.Parallel()
			dbs := handles(t, 4)
			ids := make([]string, racers)
			created := make([]bool, racers)
			var wg sync.WaitGroup
			for i := range racers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					op, c, err := dbs[i%4].CreateOperation(ctx, NewOperation{
						Agent: "a", Team: "web", Tool: "register_domain", Resource: "domain:same.dev",
						Args: json.RawMessage(`{"domain":"same.dev"}`), ArgsHash: hashOf("same.dev"),
						Reason: "the same call from every process", IdempotencyKey: key,
					})
					if err != nil {
						t.Errorf("create: %v", err)
						return
					}
					ids[i], created[i] = op.ID, c
				}()
			}
			wg.Wait()
			n := 0
			for i := range ids {
				if ids[i] != ids[0] {
					t.Fatalf("racer %d got %s, racer 0 %s: two operations for one call", i, ids[i], ids[0])
				}
				if created[i] {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d racers created the operation, want 1", n)
			}
		})
	}

	t.Run("freeze", func(t *testing.T) {
		t.Parallel()
		dbs := handles(t, 2)
		reserveOK(t, dbs[1], "a", "web", "register_domain", "1")
		if _, err := dbs[0].Freeze(ctx, AgentScope("a"), "stop it", "cli:alice"); err != nil {
			t.Fatal(err)
		}
		// The other process sees the freeze on its very next reservation.
		_, err := pipelineOp(ctx, dbs[1], "a", "web", "register_domain", usd("1"))
		var be *BlockedError
		if !errors.As(err, &be) || be.Kind != BlockFrozen {
			t.Fatalf("reserve after a freeze by another process: %v", err)
		}
		f, err := dbs[1].FrozenFor(ctx, "a", "web")
		if err != nil || f == nil || f.Reason != "stop it" {
			t.Fatalf("FrozenFor from the other process: %+v %v", f, err)
		}
	})
}
