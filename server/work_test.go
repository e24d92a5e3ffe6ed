package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// The work one call costs, counted: PDP requests, Cloudflare requests and
// token mints. Never durations.

func estimateRegister(domain string, years int) map[string]any {
	return map[string]any{"action": "register_domain", "params": map[string]any{"domain": domain, "years": years}}
}

func estimateDeploy() map[string]any {
	return map[string]any{"action": "deploy_worker", "params": map[string]any{
		"script_name": "web-estimate", "module": okModule, "compatibility_date": "2025-01-01", "environment": "preview",
	}}
}

// TestQuotesShareOneToken: 100 price checks from 4 agents' sessions at once,
// over 10 names and several terms, mint one read-only token, make at most
// one Cloudflare request per name, and record the token's mint once.
func TestQuotesShareOneToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := len(e.sb.Requests())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 25 {
				name := fmt.Sprintf("shared-quote-%d.dev", (g*25+i)%10)
				res := e.call(webBot, "estimate_cost", estimateRegister(name, 1+i%3))
				if res.IsError {
					t.Errorf("estimate %s: %s", name, text(res))
					return
				}
				if est := structured[tools.EstimateResult](t, res); est.QuoteExpiresAt.IsZero() || est.Amount.Micros == 0 {
					t.Errorf("estimate %s: %+v", name, est)
				}
			}
		})
	}
	wg.Wait()
	mints, checks, total := 0, 0, 0
	for _, r := range e.sb.Requests()[before:] {
		total++
		switch {
		case r.Method == "POST" && strings.HasSuffix(r.Path, "/tokens"):
			mints++
		case strings.HasSuffix(r.Path, "/domain-check"):
			checks++
		}
	}
	if mints > 3 {
		t.Errorf("100 quotes minted %d tokens, want at most 3", mints)
	}
	if checks != 10 {
		t.Errorf("100 quotes of 10 names made %d domain-checks, want 10 (one per name within its validity)", checks)
	}
	if total > 100 {
		t.Errorf("100 estimates made %d Cloudflare requests, want at most 1 each", total)
	}
	shared := 0
	err := e.db.Events(context.Background(), ledger.EventQuery{Types: []string{"token.minted"}}, func(ev ledger.Event) error {
		if strings.Contains(string(ev.Data), `"shared":true`) {
			shared++
		}
		return nil
	})
	if err != nil || shared != mints {
		t.Errorf("%d shared token.minted events for %d mints (%v)", shared, mints, err)
	}
}

// TestEstimateCostPolicyRequests counts the CheckResources calls of
// estimate_cost: two in turn while the quote must be fetched (a refusal on
// the arguments must not reach Cloudflare), one for both checks once the
// quote is cached or the price comes from the book, none from the decision
// cache; plus, for a call that needs a human, one per approver needed to
// learn that the approvers can meet the quorum (here 1).
func TestEstimateCostPolicyRequests(t *testing.T) {
	t.Parallel()
	requests := func(e *testEnv) uint64 { return e.az.Stats().Requests }
	call := func(e *testEnv, args map[string]any) uint64 {
		t.Helper()
		before := requests(e)
		if res := e.call(webBot, "estimate_cost", args); res.IsError {
			t.Fatalf("estimate: %s", text(res))
		}
		return requests(e) - before
	}
	t.Run("without the decision cache", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		if n := call(e, estimateRegister("policy-calls.dev", 1)); n != 2+1 {
			t.Errorf("estimate with a live quote: %d PDP requests, want 2 (arguments first) + 1 approver", n)
		}
		if n := call(e, estimateRegister("policy-calls.dev", 2)); n != 1+1 {
			t.Errorf("estimate with a cached quote: %d PDP requests, want 1 (both checks in one call) + 1 approver", n)
		}
		if n := call(e, estimateDeploy()); n != 1 {
			t.Errorf("estimate from the price book: %d PDP requests, want 1", n)
		}
	})
	t.Run("with the decision cache", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, withDecisionCache())
		call(e, estimateRegister("policy-cached.dev", 1))
		call(e, estimateRegister("policy-cached.dev", 1))
		if n := call(e, estimateRegister("policy-cached.dev", 1)); n != 0 {
			t.Errorf("a repeated estimate: %d PDP requests, want 0", n)
		}
		if n := call(e, estimateRegister("policy-cached.dev", 2)); n != 1+1 {
			t.Errorf("another term (read by the policy): %d PDP requests, want 1 + 1 approver (another amount)", n)
		}
		if st := e.az.Stats(); st.CacheHits == 0 {
			t.Errorf("stats %+v: no cache hits", st)
		}
	})
	t.Run("a refused argument never reaches Cloudflare", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		before, pdp := len(e.sb.Requests()), requests(e)
		v := opView(t, e.call(webBot, "register_domain", registerArgs("refused-tld.xyz")))
		if v.Status != "denied" || !strings.Contains(v.Error, "not on the allowlist") {
			t.Fatalf("a .xyz registration: %+v", v)
		}
		if n := len(e.sb.Requests()) - before; n != 0 {
			t.Errorf("a registration refused on its arguments made %d Cloudflare requests", n)
		}
		if n := requests(e) - pdp; n != 1 {
			t.Errorf("a registration refused on its arguments made %d PDP requests, want 1", n)
		}
	})
}

// TestPriceChecksStopBeforeTheRateLimit drives price checks into a small
// emulated rate limit: tollgate refuses them with a retry-after before the
// limit, a preview deploy (its own token, upload, revocation) still goes
// through, and the sandbox never locks the account.
func TestPriceChecksStopBeforeTheRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withRateLimit(sandbox.RateLimit{Requests: 60, Window: time.Hour, Lockout: time.Hour}))
	var refusal string
	for i := range 100 {
		res := e.call(webBot, "check_domain", map[string]any{"domain": fmt.Sprintf("budget-%03d.dev", i)})
		if res.IsError {
			refusal = text(res)
			break
		}
	}
	if !strings.Contains(refusal, "price check refused") || !strings.Contains(refusal, "retry after") {
		t.Fatalf("price checks were not refused with a retry-after: %q", refusal)
	}
	res := e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-budget", "module": okModule, "compatibility_date": "2025-01-01",
		"environment": "preview", "reason": reason,
	})
	if v := opView(t, res); v.Status != "succeeded" {
		t.Fatalf("a preview deploy inside the headroom: %s (%s)", v.Status, v.Error)
	}
	if live := operationTokens(e); len(live) != 0 {
		t.Fatalf("the deploy's token was not revoked: %+v", live)
	}
	if n := e.sb.Lockouts(); n != 0 {
		t.Fatalf("the sandbox locked the account %d times", n)
	}
	for _, r := range e.sb.Requests() {
		if r.Status == http.StatusTooManyRequests {
			t.Fatalf("Cloudflare answered 429 to %s %s", r.Method, r.Path)
		}
	}
}

// TestWriteTransactionsPerCall counts the ledger's write transactions of
// one call (a call's records commit with its state changes, or together at
// its end): an estimate_cost makes at most 2 (1 once the shared quote token
// is minted), a preview deploy at most 4 (create, authorize+reserve+
// execute, settle, the call's result). Each call is measured three times and
// the middle count is asserted: a lease heartbeat (every 10 s) may land in
// one of them.
func TestWriteTransactionsPerCall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	writes := func() uint64 { return e.db.Store().WriteTransactions() }
	measure := func(name string, want uint64, call func(i int)) {
		t.Helper()
		counts := make([]uint64, 3)
		for i := range counts {
			before := writes()
			call(i)
			counts[i] = writes() - before
		}
		slices.Sort(counts)
		t.Logf("%s: %v write transactions", name, counts)
		if counts[1] > want {
			t.Errorf("%s made %v write transactions, want at most %d", name, counts, want)
		}
	}
	measure("estimate_cost (live quote)", 2, func(i int) {
		if res := e.call(webBot, "estimate_cost", estimateRegister(fmt.Sprintf("tx-count-%d.dev", i), 1)); res.IsError {
			t.Fatalf("estimate: %s", text(res))
		}
	})
	measure("estimate_cost (cached quote)", 1, func(i int) {
		if res := e.call(webBot, "estimate_cost", estimateRegister(fmt.Sprintf("tx-count-%d.dev", i), 1)); res.IsError {
			t.Fatalf("estimate: %s", text(res))
		}
	})
	measure("estimate_cost (price book)", 1, func(int) {
		if res := e.call(webBot, "estimate_cost", estimateDeploy()); res.IsError {
			t.Fatalf("estimate: %s", text(res))
		}
	})
	measure("deploy_worker preview", 4, func(i int) {
		res := e.call(webBot, "deploy_worker", map[string]any{
			"script_name": fmt.Sprintf("web-txcount-%d", i), "module": okModule, "compatibility_date": "2025-01-01",
			"environment": "preview", "reason": reason,
		})
		if v := opView(t, res); v.Status != "succeeded" {
			t.Fatalf("preview deploy: %s (%s)", v.Status, v.Error)
		}
	})
	rep, err := e.db.Verify(context.Background())
	if err != nil || !rep.OK {
		t.Fatalf("audit chain: %+v %v", rep, err)
	}
}
