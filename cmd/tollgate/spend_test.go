package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// TestSpendCLI: `tollgate spend` reports what was charged and what is held,
// grouped by agent, team or day, on a database without a single budget.
func TestSpendCLI(t *testing.T) {
	t.Setenv("TOLLGATE_CONFIG", "")
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "t.db")
	l, err := ledger.Open(ctx, db, ledger.WithAuditKey(cliAuditKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	spend := func(agent, team, amount string, settle bool) {
		t.Helper()
		m, _ := money.ParseMoney(amount, "USD")
		sum := sha256.Sum256([]byte(agent + amount))
		op, _, err := l.CreateOperation(ctx, ledger.NewOperation{
			Agent: agent, Team: team, Tool: "register_domain", Resource: "domain:" + agent + ".dev", Args: json.RawMessage(`{}`),
			ArgsHash: hex.EncodeToString(sum[:]), Reason: "spend report test", IdempotencyKey: "k-" + agent + amount,
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []func() error{
			func() error {
				_, err := l.Transition(ctx, op.ID, ledger.StateAuthorized, ledger.TransitionOpts{From: []ledger.State{ledger.StatePlanned}})
				return err
			},
			func() error {
				_, err := l.Reserve(ctx, ledger.ReserveRequest{OperationID: op.ID, Action: "register_domain", Amount: m})
				return err
			},
		} {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		if !settle {
			return
		}
		for _, to := range []ledger.State{ledger.StateApproved, ledger.StateExecuting} {
			if _, err := l.Transition(ctx, op.ID, to, ledger.TransitionOpts{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.Settle(ctx, op.ID, ledger.SettleRequest{Actual: m}); err != nil {
			t.Fatal(err)
		}
	}
	spend("web-bot", "web", "12.18", true)
	spend("web-bot", "web", "5.00", false)
	spend("ops-bot", "ops", "10.44", true)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	out := mustRun(t, db, "spend")
	for _, want := range []string{"AGENT", "agent:web-bot", "12.18 USD", "5.00 USD", "agent:ops-bot", "10.44 USD", "total", "22.62 USD"} {
		if !strings.Contains(out, want) {
			t.Errorf("tollgate spend lacks %q:\n%s", want, out)
		}
	}
	var rep spendJSON
	if err := json.Unmarshal([]byte(mustRun(t, db, "spend", "--by", "team", "--since", "24h", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.By != "team" || len(rep.Lines) != 2 || rep.Lines[1] != (spendLineJSON{Key: "team:web", Currency: "USD", Spent: "12.18", Held: "5.00", Operations: 2}) ||
		len(rep.Total) != 1 || rep.Total[0].Spent != "22.62" || rep.Total[0].Held != "5.00" || rep.Total[0].Operations != 3 {
		t.Errorf("spend --by team --json: %+v", rep)
	}
	if out := mustRun(t, db, "spend", "--by", "day", "--since", "30d"); !strings.Contains(out, "DAY") || !strings.Contains(out, "22.62 USD") {
		t.Errorf("spend --by day:\n%s", out)
	}
	for _, bad := range [][]string{{"spend", "--by", "month"}, {"spend", "--since", "soon"}, {"spend", "--since", "0d"}, {"spend", "extra"}} {
		if _, err := run(t, db, bad...); err == nil {
			t.Errorf("tollgate %s: accepted", strings.Join(bad, " "))
		}
	}
}
