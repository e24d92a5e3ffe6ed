package server

import (
	"context"
	"fmt"

	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/tools"
)

// MandateResource is the Cerbos resource a mandate is checked as: action
// create (an approver, amount = its per-call maximum) and use (an agent's
// call, amount = its quote). The policy decides what a mandate may ever
// cover (by default registrations up to 20 USD and preview deploys).
func MandateResource(id, agent, tool, environment string, amount money.Money) authz.Resource {
	attr := map[string]any{"tool": tool, "amount_micros": amount.Micros, "currency": amount.Currency, "agent": agent}
	if environment != "" {
		attr["environment"] = environment
	}
	return authz.Resource{Kind: "mandate", ID: id, Attr: attr}
}

// mandateCandidate says which resource name a call may be covered by a
// mandate for ("" when none may): only a call that needs exactly one human,
// of an agent with an active mandate for the action, that the policy lets a
// mandate cover. The reservation then consumes a matching mandate in its
// own transaction (ledger.ReserveRequest.MandateResource).
func (p *Pipeline) mandateCandidate(ctx context.Context, pr Principal, ci ledger.ClientInfo, m tools.Mutation, plan tools.Plan, need approvalNeed, actor, opID string) string {
	if !need.Required || need.Approvals != 1 {
		return ""
	}
	has, err := p.db.HasActiveMandate(ctx, pr.Name, m.Name())
	if err != nil || !has {
		return ""
	}
	env, _ := plan.Resource.Attr["environment"].(string)
	res := MandateResource(opID, pr.Name, m.Name(), env, plan.Amount)
	d := p.decide(ctx, p.principal(pr, ci), res, "use")
	if err := p.db.Append(ctx, decisionEvent(actor, opID, res, "use", d)); err != nil || !d.Allowed {
		return ""
	}
	return plan.Resource.ID
}

// approveByMandate moves an operation whose reservation used a mandate to
// approved: no human is asked, and the mandate's id is in the audit trail.
func (p *Pipeline) approveByMandate(ctx context.Context, op ledger.Operation, mandateID string) error {
	_, err := p.db.Transition(ctx, op.ID, ledger.StateApproved, ledger.TransitionOpts{
		From: []ledger.State{ledger.StateReserved}, Actor: "mandate:" + mandateID,
	}, ledger.NewEvent("approval.mandate", "mandate:"+mandateID, op.ID, map[string]any{
		"mandate_id": mandateID, "why": fmt.Sprintf("covered by standing approval %s", mandateID),
	}))
	return err
}
