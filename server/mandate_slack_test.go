package server

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/approvals"
	slackchan "github.com/tollgatehq/tollgate/approvals/slack"
	"github.com/tollgatehq/tollgate/ledger"
)

// TestSlackMandateButton: Approve + allow 5 more today is on a registration's
// message and not on a production deploy's; a signed click goes through the
// same core as the console and the CLI (real Cerbos, real ledger). The
// owner's click and a forged click on a production deploy change nothing and
// say why; bob's click approves and gives the mandate, and the next
// registration like it runs without a human.
func TestSlackMandateButton(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = nil
	}))
	v, r := requestRegistration(t, e, registerArgs("slack-mandate.dev"))
	post := sl.rec.waitPost(t, r.ID)
	if b := messageButtons(t, post); !slices.Contains(b, slackButton{slackchan.ActionIDApproveMandate, r.ID, ""}) {
		t.Fatalf("buttons %+v lack Approve + allow", b)
	}
	if msg := blocksText(t, post); !strings.Contains(msg, "Approve + allow 5 more today, ≤ 12.18 USD each") ||
		!strings.Contains(msg, "lets web-bot run register_domain on *.dev up to 5 more times in the next 24 hours") {
		t.Fatalf("the message does not say what the mandate is:\n%s", msg)
	}

	// A production deploy never shows it, and a forged click on one is refused.
	res := e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-landing", "module": okModule, "compatibility_date": "2025-01-01",
		"environment": "production", "reason": reason,
	})
	if res.IsError {
		t.Fatal(text(res))
	}
	prod := e.pendingApproval(opView(t, res).OperationID)
	prodPost := sl.rec.waitPost(t, prod.ID)
	for _, b := range messageButtons(t, prodPost) {
		if b.ActionID == slackchan.ActionIDApproveMandate {
			t.Fatal("a production deploy offers a mandate")
		}
	}
	if rep := sl.click(t, slackBlockAction("U0BOB", slackchan.ActionIDApproveMandate, prod.ID)); rep.Status != 200 {
		t.Fatalf("forged click: %d %s", rep.Status, rep.Body)
	}
	if got := sl.rec.lastEphemeral(t, "U0BOB"); !strings.HasPrefix(got, slackchan.ReplyMandateRefused) || !strings.Contains(got, "needs a human every time") {
		t.Fatalf("bob's reply to the forged click: %q", got)
	}
	if !hasAuditCode(t, e, approvals.EventRejected, "mandate_refused", prod.ID) {
		t.Error("the refused mandate is not audited")
	}
	if got := e.pendingApproval(prod.OperationID); got.State != approvals.StatePending || len(got.Votes) != 0 {
		t.Fatalf("a refused mandate voted on the deploy: %+v", got)
	}

	// The owner cannot approve, so she cannot give a mandate either.
	sl.click(t, slackBlockAction("U0ALICE", slackchan.ActionIDApproveMandate, r.ID))
	if got := sl.rec.lastEphemeral(t, "U0ALICE"); got != slackchan.ReplySelfApproval {
		t.Fatalf("alice's reply %q", got)
	}
	if ms := e.mandates(); len(ms) != 0 {
		t.Fatalf("refused clicks created %+v", ms)
	}

	sl.click(t, slackBlockAction("U0BOB", slackchan.ActionIDApproveMandate, r.ID))
	e.waitState(v.OperationID, ledger.StateSucceeded)
	ms := e.mandates()
	if len(ms) != 1 || ms[0].CreatedBy != "slack:bob" || ms[0].Count != 5 || ms[0].Pattern != "*.dev" || ms[0].MaxPerCall.String() != "12.18 USD" {
		t.Fatalf("mandates %+v, want one by slack:bob for 5 *.dev calls up to 12.18 USD", ms)
	}
	if got := sl.rec.lastEphemeral(t, "U0BOB"); !strings.Contains(got, "Approved, and standing approval `"+ms[0].ID+"` is given") {
		t.Errorf("bob's reply %q", got)
	}
	v2 := opView(t, e.call(webBot, "register_domain", registerArgs("slack-mandate-two.dev")))
	e.waitState(v2.OperationID, ledger.StateSucceeded)
	if used, err := e.db.MandateOf(context.Background(), v2.OperationID); err != nil || used != ms[0].ID {
		t.Fatalf("second registration used %q (%v), want %s", used, err, ms[0].ID)
	}
}
