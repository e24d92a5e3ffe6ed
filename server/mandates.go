package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"

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
	if !p.mandateMayCover(ctx, pr, ci, m, plan, actor, opID, p.db.Append) {
		return ""
	}
	return plan.Resource.ID
}

// mandateMayCover asks the policy whether a mandate may cover the call
// (resource mandate, action use; id: the operation's, "estimate" without
// one), recording the decision with record; an unrecorded decision allows
// nothing.
func (p *Pipeline) mandateMayCover(ctx context.Context, pr Principal, ci ledger.ClientInfo, m tools.Mutation, plan tools.Plan, actor, opID string,
	record func(context.Context, ...ledger.Event) error) bool {
	env, _ := plan.Resource.Attr["environment"].(string)
	id := opID
	if id == "" {
		id = "estimate" // an estimate has no operation; the policy needs an id
	}
	res := MandateResource(id, pr.Name, m.Name(), env, plan.Amount)
	d := p.decide(ctx, p.principal(pr, ci), res, "use")
	return record(ctx, decisionEvent(actor, opID, res, "use", d)) == nil && d.Allowed
}

// coveringMandate is the mandate a reservation now would use for the call
// (nil when none would, or the policy lets none cover it, or either could
// not be read): what estimate_cost reports. It reads and consumes nothing.
func (p *Pipeline) coveringMandate(ctx context.Context, pr Principal, ci ledger.ClientInfo, m tools.Mutation, plan tools.Plan, need approvalNeed) *ledger.Mandate {
	if !need.Required || need.Approvals != 1 {
		return nil
	}
	md, err := p.db.MandateFor(ctx, pr.Name, m.Name(), plan.Resource.ID, plan.Amount)
	if err != nil {
		p.log.Warn("read mandates for an estimate", "agent", pr.Name, "err", err)
		return nil
	}
	if md == nil || !p.mandateMayCover(ctx, pr, ci, m, plan, pr.actor(), "", p.db.Record) {
		return nil
	}
	return md
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

// MandateInput is a mandate an approver asks for, through any channel: the
// CLI (tollgate mandates create), the console and Slack all create one with
// CreateMandate.
type MandateInput struct {
	Approver    approvals.Approver
	Via         string // approvals.ViaCLI, ViaWeb, ViaSlack, ViaSocket: recorded as created_by "via:name"
	Agent       string
	Action      string // the tool it covers
	Environment string // the environment checked with the policy, for a tool with environments (a deploy mandate may cover only "preview")
	Pattern     string
	MaxPerCall  money.Money
	MaxTotal    money.Money
	Count       int
	Lifetime    time.Duration
}

// MandateCreator is what creating a mandate needs: the ledger, the policy
// engine and the configuration (agents' owners, quorum tiers).
type MandateCreator struct {
	DB    *ledger.DB
	Authz *authz.Client
	Cfg   Config
}

func (in MandateInput) mandate(now time.Time) ledger.Mandate {
	by := in.Via
	if by == approvals.ViaSocket {
		by = approvals.ViaSlack
	}
	return ledger.Mandate{
		Agent: in.Agent, Action: in.Action, Pattern: strings.ToLower(strings.TrimSpace(in.Pattern)),
		MaxPerCall: in.MaxPerCall, MaxTotal: in.MaxTotal, Count: in.Count,
		CreatedBy: by + ":" + in.Approver.Name, ExpiresAt: now.Add(in.Lifetime),
	}
}

func refused(format string, args ...any) error {
	return &approvals.MandateRefusedError{Reason: fmt.Sprintf(format, args...)}
}

// Check applies every rule of creating in without writing anything: the
// input (pattern, amounts, count, expiry ≤ 7 days), the action, the
// self-approval rule (the agent's owner never gives it a mandate), the
// quorum tiers (a call a mandate covers is approved by one person, so a
// tier above one approver caps its per-call maximum) and the policy
// (resource mandate, action create). A refusal is a
// *approvals.MandateRefusedError; an unreachable policy engine refuses too.
func (mc MandateCreator) Check(ctx context.Context, in MandateInput) error {
	if !tools.IsRateLimited(in.Action) {
		return refused("a mandate covers %s, not %s", tools.OrList(tools.RateLimited()), display.Text(in.Action, 40))
	}
	if in.Lifetime <= 0 || in.Lifetime > ledger.MaxMandateLifetime {
		return refused("expiry %s: use 1s to 168h (7 days)", in.Lifetime)
	}
	if err := in.mandate(time.Now()).Validate(time.Now()); err != nil {
		return refused("%s", strings.TrimPrefix(err.Error(), "mandate: "))
	}
	owner := ""
	if a, err := mc.DB.Agent(ctx, in.Agent); err == nil {
		owner = a.Owner
	}
	for _, a := range mc.Cfg.Agents {
		if a.Name == in.Agent {
			owner = a.Owner
		}
	}
	if strings.EqualFold(in.Approver.Name, owner) || strings.EqualFold(in.Approver.Name, in.Agent) {
		return refused("%s owns agent %s, so another approver has to give it a mandate", in.Approver.Name, in.Agent)
	}
	for _, q := range mc.Cfg.Approvals.Quorum {
		above, err := money.ParseMoney(q.Above, strings.ToUpper(orUSD(q.Currency)))
		if err == nil && q.Approvers > 1 && (above.Currency != in.MaxPerCall.Currency || in.MaxPerCall.Micros > above.Micros) {
			return refused("calls above %s need %d approvers (approvals.quorum), so one approver cannot give a mandate of %s per call; lower the per-call maximum", above, q.Approvers, in.MaxPerCall)
		}
	}
	if mc.Authz == nil {
		return refused("the policy engine could not be asked")
	}
	res := MandateResource("new", in.Agent, in.Action, in.Environment, in.MaxPerCall)
	d := mc.Authz.Check(ctx, authz.Principal{ID: in.Approver.Name, Roles: in.Approver.Roles}, res, "create")["create"]
	if d.Unavailable {
		return refused("the policy engine could not be asked")
	}
	if !d.Allowed {
		why := "no policy rule lets " + in.Approver.Name + " create this mandate"
		if len(d.Reasons) > 0 {
			why = d.Reasons[0]
		}
		return refused("not allowed: %s", why)
	}
	return nil
}

// CreateMandate checks in (Check) and stores the mandate, audited as
// mandate.created by "via:approver". It is the one way a mandate is made:
// the CLI, the console and Slack all come here.
func (mc MandateCreator) CreateMandate(ctx context.Context, in MandateInput) (ledger.Mandate, error) {
	if err := mc.Check(ctx, in); err != nil {
		return ledger.Mandate{}, err
	}
	return mc.DB.CreateMandate(ctx, in.mandate(time.Now()))
}

// MandateSentence is one mandate as a line a person reads.
func MandateSentence(m ledger.Mandate, now time.Time) string {
	t := func(s string) string { return display.Text(s, 120) }
	state := fmt.Sprintf("%d of %d used (%s of %s), expires in %s", m.Used, m.Count,
		money.Money{Micros: m.UsedMicros, Currency: m.MaxTotal.Currency}, m.MaxTotal, display.Duration(m.ExpiresAt.Sub(now)))
	switch {
	case m.RevokedAt != nil:
		state = fmt.Sprintf("revoked by %s after %d of %d uses", t(m.RevokedBy), m.Used, m.Count)
	case !now.Before(m.ExpiresAt):
		state = fmt.Sprintf("expired after %d of %d uses", m.Used, m.Count)
	case m.Used >= m.Count:
		state = fmt.Sprintf("used up (%d of %d)", m.Used, m.Count)
	}
	return fmt.Sprintf("%s  %s may %s %s up to %s each, given by %s: %s", m.ID, t(m.Agent), t(m.Action), t(m.Pattern), m.MaxPerCall, t(m.CreatedBy), state)
}

// Mandate defaults offered with an approval (the console's form and
// Slack's button): five more like it, each up to this one's amount, for a day.
const (
	offerCount    = 5
	offerLifetime = 24 * time.Hour
)

// approvalMandates is approvals.Mandates on a MandateCreator: mandates
// given with an approval, for the request's agent and tool.
type approvalMandates struct{ mc MandateCreator }

// environmentOf is the environment of the call a request is for, as its
// tool's policy resource says it ("" when the tool has none, or its
// arguments cannot be read: a mandate needing one is then refused). The
// same attribute is checked when a call uses a mandate.
func (am approvalMandates) environmentOf(ctx context.Context, r approvals.Request) string {
	op, err := am.mc.DB.Operation(ctx, r.OperationID)
	if err != nil {
		return ""
	}
	return operationEnvironment(op)
}

func operationEnvironment(op ledger.Operation) string {
	t, ok := tools.Find(op.Tool)
	if !ok || t.Mutation == nil {
		return ""
	}
	res, err := t.Mutation(tools.Config{}).PreResource(op.Args)
	if err != nil {
		return ""
	}
	env, _ := res.Attr["environment"].(string)
	return env
}

// DefaultMandatePattern derives a resource pattern from the name a request
// is for (a name, or an operation's "kind:name"), as the tool declares it
// (tools.ApprovalTraits.MandatePattern): a domain's suffix ("launch.dev" →
// "*.dev"), a Worker's prefix ("shop-api" → "shop-*"), or the exact name.
func DefaultMandatePattern(tool, resource string) string {
	resource = strings.ToLower(strings.TrimSpace(resource))
	if i := strings.LastIndex(resource, ":"); i >= 0 {
		resource = resource[i+1:] // an operation's resource is "kind:name"
	}
	if t, ok := tools.Find(tool); ok && t.Approval.MandatePattern != nil && resource != "" {
		return t.Approval.MandatePattern(resource)
	}
	return resource
}

func (am approvalMandates) Offer(ctx context.Context, ap *approvals.Approver, r approvals.Request) approvals.MandateOffer {
	resource, env := "", ""
	if op, err := am.mc.DB.Operation(ctx, r.OperationID); err == nil {
		resource, env = op.Resource, operationEnvironment(op)
	}
	per := money.Money{Micros: r.AmountMicros, Currency: r.Currency}
	total, err := per.Mul(offerCount)
	if err != nil {
		return approvals.MandateOffer{Why: err.Error()}
	}
	offer := approvals.MandateOffer{Default: approvals.MandateSpec{
		Pattern: DefaultMandatePattern(r.Tool, resource), MaxPerCall: per, MaxTotal: total, Count: offerCount, Lifetime: offerLifetime,
	}}
	if r.Quorum > 1 {
		offer.Why = fmt.Sprintf("this request needs %d approvers, and a mandate is given by one", r.Quorum)
		return offer
	}
	who := approvals.Approver{Name: "any approver", Roles: []string{"approver"}}
	if ap != nil {
		who = *ap
	}
	if err := am.mc.Check(ctx, am.input(who, r, env, offer.Default, approvals.ViaWeb)); err != nil {
		offer.Why = err.Error()
		var mr *approvals.MandateRefusedError
		if errors.As(err, &mr) {
			offer.Why = mr.Reason
		}
		return offer
	}
	offer.Allowed = true
	return offer
}

func (am approvalMandates) input(ap approvals.Approver, r approvals.Request, env string, spec approvals.MandateSpec, via string) MandateInput {
	return MandateInput{
		Approver: ap, Via: via, Agent: r.Agent, Action: r.Tool, Environment: env,
		Pattern: spec.Pattern, MaxPerCall: spec.MaxPerCall, MaxTotal: spec.MaxTotal, Count: spec.Count, Lifetime: spec.Lifetime,
	}
}

func (am approvalMandates) Create(ctx context.Context, ap approvals.Approver, r approvals.Request, spec approvals.MandateSpec, via string) (approvals.Mandate, error) {
	if r.Quorum > 1 {
		return approvals.Mandate{}, refused("this request needs %d approvers, and a mandate is given by one", r.Quorum)
	}
	m, err := am.mc.CreateMandate(ctx, am.input(ap, r, am.environmentOf(ctx, r), spec, via))
	if err != nil {
		var mr *approvals.MandateRefusedError
		if errors.As(err, &mr) {
			return approvals.Mandate{}, err
		}
		return approvals.Mandate{}, refused("%s", strings.TrimPrefix(strings.TrimPrefix(err.Error(), "create mandate: "), "mandate: "))
	}
	return approvals.Mandate{ID: m.ID, Sentence: MandateSentence(m, time.Now())}, nil
}

func (am approvalMandates) Revoke(ctx context.Context, id, by string) error {
	_, err := am.mc.DB.RevokeMandate(ctx, id, by)
	return err
}
