package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/tools"
)

// Pipeline carries every tool call through plan → authorize → reserve →
// approve → execute → settle, writing an audit event at every step. It
// implements tools.Runner. The Operation in the ledger is the source of
// truth; the pipeline only ever moves it forward.
type Pipeline struct {
	db        *ledger.DB
	authz     *authz.Client
	broker    *cloudflare.Broker
	approvals *approvals.Service
	muts      map[string]tools.Mutation
	cfg       Config
	quorum    []quorumRule
	sandbox   bool // Cloudflare is the built-in sandbox (P.attr.sandbox)
	log       *slog.Logger
	now       func() time.Time
	metrics   *metrics
	watch     *watcher
	notify    *notifier
	term      *terminal    // serve's approval lines; nil prints nothing
	following atomic.Int64 // followDecision goroutines running (tests wait for them)

	// life is the server's lifetime: pipelines started by a call outlive
	// the call (a client may disconnect while a human decides).
	life context.Context
	wg   sync.WaitGroup
	// reconciling holds the in_doubt Operations being reconciled.
	reconciling sync.Map
	quotes      quoteLimiter
	// freezes are the active freezes the loop last saw (watchFreezes); only
	// the loop touches it.
	freezes    map[string]bool
	quoteCache *quoteCache
	// quoteSession is the shared read-only token every price check uses.
	quoteSession *cloudflare.SharedSession
	// inspectSession is the shared read-only token of lookups (zones,
	// custom domains) while planning and scoping a call.
	inspectSession *cloudflare.SharedSession
	// elicit, when set, points the waiting call's MCP client at the
	// approval's console page (URL-mode elicitation); the func it returns
	// ends that when the call returns.
	elicit func(ctx context.Context, opID string) func()
}

var _ tools.Runner = (*Pipeline)(nil)

type quorumRule struct {
	above     money.Money
	approvers int
}

// Now is the pipeline clock.
func (p *Pipeline) Now() time.Time { return p.now() }

func (p *Pipeline) caller(ctx context.Context) (Principal, ledger.ClientInfo, error) {
	pr, ok := principalFrom(ctx)
	if !ok {
		return Principal{}, ledger.ClientInfo{}, &tools.ToolError{Code: "unauthenticated", Message: "no agent identity on this session; refusing"}
	}
	return pr, clientInfo(ctx, pr.Transport), nil
}

// principal is pr as the policy sees it on this server: with
// P.attr.sandbox when nothing is billed.
func (p *Pipeline) principal(pr Principal, ci ledger.ClientInfo) authz.Principal {
	return pr.authzPrincipal(ci, p.sandbox)
}

// decide asks Cerbos and times it. It never fails open.
func (p *Pipeline) decide(ctx context.Context, pr authz.Principal, res authz.Resource, action string) authz.Decision {
	return p.decideAll(ctx, pr, authz.Check{Resource: res, Actions: []string{action}})[0]
}

// decideAll asks Cerbos about several resources, one action each, in one
// call (or none, when the decision cache knows them all) and times it. It
// never fails open.
func (p *Pipeline) decideAll(ctx context.Context, pr authz.Principal, checks ...authz.Check) []authz.Decision {
	start := time.Now()
	got := p.authz.CheckBatch(ctx, pr, checks)
	took := time.Since(start)
	out := make([]authz.Decision, len(checks))
	for i, c := range checks {
		action := c.Actions[0]
		if i < len(got) && len(got[i]) == 1 {
			out[i] = got[i][0]
		} else {
			out[i] = authz.Decision{Action: action, Unavailable: true, Reasons: []string{"policy engine unavailable: no decision for " + action}}
		}
		p.metrics.observeDecision(c.Resource.Kind, action, out[i].Allowed, took)
	}
	return out
}

// planned is a mutation planned and decided: the check on its arguments
// alone (pre) and, when that allowed and planning worked, the check on the
// plan (with the price).
type planned struct {
	pre         authz.Resource
	preDecision authz.Decision
	plan        tools.Plan
	planErr     error
	decision    authz.Decision
}

// planAndDecide plans m and asks policy about the arguments (preAction on
// m.PreResource) and about the plan (m.Action() on plan.Resource). When the
// plan needs nothing from Cloudflare (the Workers price book, a cached
// quote), both questions go in one CheckResources call. Otherwise the
// arguments are checked first, so a call the policy refuses never reaches
// Cloudflare, not even for a price; then the live plan is checked.
func (p *Pipeline) planAndDecide(ctx context.Context, m tools.Mutation, principal authz.Principal, args json.RawMessage, blob []byte, preAction string) (planned, error) {
	var out planned
	pre, err := m.PreResource(args)
	if err != nil {
		return out, err
	}
	out.pre = pre
	team, _ := principal.Attr["team"].(string)
	plan, err := m.Plan(ctx, cachedQuotes{planEnv{p, team}}, args, blob)
	if err == nil {
		ds := p.decideAll(ctx, principal,
			authz.Check{Resource: pre, Actions: []string{preAction}},
			authz.Check{Resource: plan.Resource, Actions: []string{m.Action()}})
		out.preDecision, out.plan, out.decision = ds[0], plan, ds[1]
		return out, nil
	}
	out.preDecision = p.decide(ctx, principal, pre, preAction)
	if !out.preDecision.Allowed {
		return out, nil
	}
	if !errors.Is(err, errQuoteNeeded) {
		out.planErr = err
		return out, nil
	}
	if out.plan, out.planErr = m.Plan(ctx, planEnv{p, team}, args, blob); out.planErr == nil {
		out.decision = p.decide(ctx, principal, out.plan.Resource, m.Action())
	}
	return out, nil
}

func decisionEvent(actor, opID string, res authz.Resource, action string, d authz.Decision) ledger.Event {
	outputs := make([]map[string]any, 0, len(d.Outputs))
	for _, o := range d.Outputs {
		outputs = append(outputs, map[string]any{"source": o.Source, "value": o.Value})
	}
	return ledger.NewEvent("policy.decision", actor, opID, map[string]any{
		"resource": res.Kind + ":" + res.ID, "attributes": res.Attr, "action": action,
		"allowed": d.Allowed, "reasons": d.Reasons, "policy": d.Policy, "outputs": outputs,
		"unavailable": d.Unavailable,
	})
}

// Authorize implements tools.Runner for read-only tools.
func (p *Pipeline) Authorize(ctx context.Context, res authz.Resource, action string) authz.Decision {
	pr, ci, err := p.caller(ctx)
	if err != nil {
		return authz.Decision{Action: action, Reasons: []string{err.Error()}}
	}
	d := p.decide(ctx, p.principal(pr, ci), res, action)
	if err := p.db.Record(ctx, decisionEvent(pr.actor(), "", res, action, d)); err != nil {
		p.log.Error("audit append failed; denying", "err", err)
		return authz.Decision{Action: action, Reasons: []string{"audit trail unavailable; refusing to act without a record"}}
	}
	p.tellDenied(pr, res, action, d)
	return d
}

// AuthorizeAll implements tools.Runner for read-only tools that show many
// things: one policy call, one audit append.
func (p *Pipeline) AuthorizeAll(ctx context.Context, checks []authz.Check) []authz.Decision {
	deny := func(reason string) []authz.Decision {
		out := make([]authz.Decision, len(checks))
		for i, c := range checks {
			out[i] = authz.Decision{Action: c.Actions[0], Reasons: []string{reason}}
		}
		return out
	}
	pr, ci, err := p.caller(ctx)
	if err != nil {
		return deny(err.Error())
	}
	ds := p.decideAll(ctx, p.principal(pr, ci), checks...)
	events := make([]ledger.Event, len(checks))
	for i, c := range checks {
		events[i] = decisionEvent(pr.actor(), "", c.Resource, c.Actions[0], ds[i])
	}
	if err := p.db.Record(ctx, events...); err != nil {
		p.log.Error("audit append failed; denying", "err", err)
		return deny("audit trail unavailable; refusing to act without a record")
	}
	return ds
}

// tellDenied sends the agent a log notification for a policy deny.
func (p *Pipeline) tellDenied(pr Principal, res authz.Resource, action string, d authz.Decision) {
	if !d.Allowed {
		p.notify.tellAgent(pr.Name, mcp.LoggingLevelWarning, loggerPolicy, agentMessage{
			Event: "policy_denied", Code: denyCode(d), Message: fmt.Sprintf("policy refused %s on %s:%s: %s", action, res.Kind, res.ID, denyReason(action, d)),
		})
	}
}

// Progress implements tools.Runner.
func (p *Pipeline) Progress(ctx context.Context, token mcp.ProgressToken) func(string) {
	return p.notify.progress(ctx, token)
}

// CommitmentRecorded implements tools.PlanEnv.
func (p *Pipeline) CommitmentRecorded(ctx context.Context, key string) (bool, error) {
	return p.db.CommitmentRecorded(ctx, key)
}

type operationKey struct{}

// withOperation marks ctx as working for an Operation, so what happens on
// its behalf (the plan-time quote) lands in its audit story.
func withOperation(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, operationKey{}, id)
}

func operationFrom(ctx context.Context) string {
	id, _ := ctx.Value(operationKey{}).(string)
	return id
}

// withSession mints a token for one built-in purpose, audits it, runs fn,
// and deletes the token, auditing that too. The token never outlives fn.
func (p *Pipeline) withSession(ctx context.Context, purpose cloudflare.Purpose, opID string, fn func(*cloudflare.Session) error) error {
	perm := purpose.Permissions()
	return p.withSpec(ctx, cloudflare.SessionSpec{Name: string(purpose), Label: opID, Permissions: perm, AllZones: len(perm.Zone) > 0}, opID, fn)
}

// executeSpec is the token an execution of op gets: the tool's declared
// permissions, its zone groups on exactly the call's zones.
func (p *Pipeline) executeSpec(ctx context.Context, m tools.Mutation, op ledger.Operation) (cloudflare.SessionSpec, error) {
	spec := cloudflare.SessionSpec{Name: m.Action(), Label: op.ID, Permissions: m.Access().Execute}
	if len(spec.Permissions.Zone) == 0 {
		return spec, nil
	}
	zs, ok := m.(tools.ZoneScoped)
	if !ok {
		return spec, fmt.Errorf("%s declares zone permissions but names no zones", m.Name())
	}
	zones, err := zs.Zones(ctx, p.lookup(ctx), op.Args)
	if err != nil {
		return spec, err
	}
	spec.Zones = zones
	return spec, nil
}

// withSpec mints a token for spec, audits it, runs fn, and deletes the
// token, auditing that too. The token never outlives fn. The token's records
// go in ctx's journal when it has one: fn's first ledger write (executing,
// before anything reaches Cloudflare) or the settle commits them.
func (p *Pipeline) withSpec(ctx context.Context, spec cloudflare.SessionSpec, opID string, fn func(*cloudflare.Session) error) error {
	if spec.Label == "" {
		spec.Label = spec.Name
	}
	purpose := spec.Name
	s, err := p.broker.Open(ctx, spec)
	if err != nil {
		return fmt.Errorf("mint a %s token: %w", purpose, err)
	}
	resources := "this account only"
	switch {
	case len(spec.Zones) > 0:
		resources = "this account; zones " + strings.Join(spec.Zones, ", ")
	case spec.AllZones:
		resources = "this account and its zones"
	}
	minted := ledger.NewEvent("token.minted", "system", opID, map[string]any{
		"token_id": s.TokenID, "purpose": purpose, "expires_at": s.ExpiresAt,
		"permission_groups": s.PermissionGroups, "resources": resources, "request_ip": p.cfg.Cloudflare.RequestIP,
	})
	if err := p.db.Record(ctx, minted); err != nil {
		_ = s.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("audit token: %w", err)
	}
	runErr := fn(s)
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	ev := ledger.NewEvent("token.revoked", "system", opID, map[string]any{"token_id": s.TokenID, "purpose": purpose})
	if cerr := s.Close(closeCtx); cerr != nil {
		p.log.Error("token revoke failed; the start-up sweeper will delete it", "token_id", s.TokenID, "err", cerr)
		ev = ledger.NewEvent("token.revoke_failed", "system", opID, map[string]any{"token_id": s.TokenID, "error": cerr.Error()})
	}
	if aerr := p.db.Record(closeCtx, ev); aerr != nil && runErr == nil {
		runErr = fmt.Errorf("audit token: %w", aerr)
	}
	return runErr
}

// Mutate implements tools.Runner.
func (p *Pipeline) Mutate(ctx context.Context, m tools.Mutation, call tools.Call) (tools.OperationView, error) {
	pr, ci, err := p.caller(ctx)
	if err != nil {
		return tools.OperationView{}, err
	}
	op, created, err := p.db.CreateOperation(ctx, ledger.NewOperation{
		Agent: pr.Name, Team: pr.Team, Tool: m.Name(), Resource: call.Resource,
		Args: call.Args, ArgsHash: call.ArgsHash, Reason: call.Reason,
		IdempotencyKey: call.IdempotencyKey, Client: ci, Blob: call.Blob,
	}, ledger.NewEvent("call.mutation", pr.actor(), "", map[string]any{
		"tool": m.Name(), "args": call.Args, "reason": call.Reason, "client": ci,
	}))
	if errors.Is(err, ledger.ErrIdempotencyConflict) {
		return tools.OperationView{}, &tools.ToolError{Code: "idempotency_conflict", Message: fmt.Sprintf(
			"idempotency_key %q was already used for different arguments; an approval binds the exact arguments, so use a new key for a new request", call.IdempotencyKey)}
	}
	if err != nil {
		return tools.OperationView{}, fmt.Errorf("create operation: %w", err)
	}
	if created {
		p.goRun(func(ctx context.Context) { p.run(ctx, op, m, pr, ci, call.Blob) })
	} else {
		call.Progress(fmt.Sprintf("same call as operation %s (%s); waiting on it instead of acting twice", op.ID, op.State))
	}
	wait := p.cfg.Approvals.Wait
	w := taskWindowFrom(ctx)
	if w != nil {
		// A task is polled, not held open: it follows the Operation until a
		// human decides, and tasks/get reports what it waits for.
		w.bind(op.ID)
		wait = taskApprovalWait(p.cfg.Approvals.Expiry)
	}
	if p.elicit != nil {
		defer p.elicit(ctx, op.ID)()
	}
	v, err := p.await(ctx, op.ID, wait, call.Progress, true)
	why := ""
	switch {
	case err != nil:
		return v, err
	case w != nil && w.wasCancelled():
		why = "the agent cancelled the MCP task"
	case w == nil && explicitlyCancelled(ctx):
		why = "the agent cancelled the MCP request (notifications/cancelled)"
	default:
		return v, nil
	}
	// tasks/cancel or notifications/cancelled: the agent no longer wants it.
	// Once the operation has reached the human (or ended), its approval is
	// withdrawn and its hold released; a client that merely went away is not
	// a withdrawal.
	bg := context.WithoutCancel(ctx)
	if _, err := p.await(bg, op.ID, 0, nil, true); err != nil {
		return v, nil
	}
	if cur, err := p.db.Operation(bg, op.ID); err == nil && cur.State == ledger.StateAwaitingApproval {
		if err := p.withdraw(bg, cur, why, pr.actor()); err != nil {
			p.log.Warn("withdrawal on cancel failed", "operation", op.ID, "err", err)
		}
	}
	if cur, err := p.db.Operation(bg, op.ID); err == nil {
		v = p.view(bg, cur)
	}
	return v, nil
}

func (p *Pipeline) goRun(fn func(ctx context.Context)) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn(p.life)
	}()
}

// run moves a new Operation from planned as far as it can go without a human.
func (p *Pipeline) run(ctx context.Context, op ledger.Operation, m tools.Mutation, pr Principal, ci ledger.ClientInfo, blob []byte) {
	// The zone the plan finds is the one an execution that follows at once
	// is scoped to: looked up once per call.
	ctx = withZoneMemo(withOperation(ctx, op.ID))
	ctx, owned := ledger.WithJournal(ctx)
	if owned {
		defer p.flush(ctx, op.ID)
	}
	principal := p.principal(pr, ci)
	actor := pr.actor()
	planned := []ledger.State{ledger.StatePlanned}

	// A frozen principal is refused at once: no token is minted and nothing,
	// not even a price quote, reaches Cloudflare. Reserve checks again
	// atomically, for a freeze that lands while this call plans.
	if f, err := p.db.FrozenFor(ctx, pr.Name, pr.Team); err != nil {
		p.end(ctx, op.ID, planned, ledger.StateFailed, "internal_error", "read freezes: "+err.Error())
		return
	} else if f != nil {
		b := &ledger.BlockedError{Kind: ledger.BlockFrozen, Scope: f.Scope, Freeze: f}
		p.end(ctx, op.ID, planned, ledger.StateDenied, b.Code(), b.Error(),
			ledger.NewEvent(ledger.EventBudgetBlocked, actor, op.ID, map[string]any{
				"kind": b.Kind, "scope": f.Scope, "code": b.Code(), "message": b.Error(), "flagged": true, "action": m.Name(),
			}))
		p.tellBlocked(op, b)
		p.alert(ctx, fmt.Sprintf(":no_entry: Blocked %s for agent %s (team %s): %s", m.Name(), pr.Name, pr.Team, b.Error()))
		return
	}

	// A check on what the arguments alone say, so a call the policy refuses
	// never reaches Cloudflare, not even for a price.
	pd, err := p.planAndDecide(ctx, m, principal, op.Args, blob, m.Action())
	if err != nil {
		p.end(ctx, op.ID, planned, ledger.StateFailed, "invalid_arguments", err.Error())
		return
	}
	if !pd.preDecision.Allowed {
		p.deny(ctx, op, pd.pre, m.Action(), pd.preDecision, actor)
		return
	}
	preEvent := decisionEvent(actor, op.ID, pd.pre, m.Action(), pd.preDecision)
	if pd.planErr != nil {
		code := "plan_failed"
		var te *tools.ToolError
		if errors.As(pd.planErr, &te) {
			code = te.Code
		}
		p.end(ctx, op.ID, planned, ledger.StateFailed, code, pd.planErr.Error(), preEvent)
		return
	}
	plan, dec := pd.plan, pd.decision
	if !dec.Allowed {
		p.deny(ctx, op, plan.Resource, m.Action(), dec, actor, preEvent)
		return
	}
	need := p.approvalNeed(m, op.Args, plan, dec)
	// The policy's allow and the hold commit in one transaction; a call no
	// human has to approve moves on to executing in it too, so one commit
	// precedes everything that reaches Cloudflare.
	mandateFor := p.mandateCandidate(ctx, pr, ci, m, plan, need, actor, op.ID)
	rr := ledger.ReserveRequest{
		OperationID: op.ID, Agent: pr.Name, Team: pr.Team, Action: m.Name(),
		Amount: plan.Amount, Commitment: plan.Commitment, MandateResource: mandateFor,
		Authorize: &ledger.Step{Opts: ledger.TransitionOpts{From: planned, Actor: "policy"}, Events: []ledger.Event{
			preEvent, decisionEvent(actor, op.ID, plan.Resource, m.Action(), dec),
			ledger.NewEvent("operation.planned", "system", op.ID, map[string]any{
				"amount": plan.Amount.String(), "basis": plan.Basis, "summary": plan.Summary,
				"approval_required": need.Required, "approvals": need.Approvals, "why": need.Why,
			})}},
	}
	direct := !need.Required && p.leaseHeld()
	if direct {
		rr.Then = []ledger.Step{
			{To: ledger.StateApproved, Opts: ledger.TransitionOpts{From: []ledger.State{ledger.StateReserved}, Actor: "policy"},
				Events: []ledger.Event{ledger.NewEvent("approval.not_required", "policy", op.ID, map[string]any{"why": "reversible and no policy asked for a human"})}},
			{To: ledger.StateExecuting, Opts: ledger.TransitionOpts{From: []ledger.State{ledger.StateApproved}, Actor: "system"}},
		}
	}
	start := time.Now()
	reserved, err := p.db.Reserve(ctx, rr)
	p.metrics.observeReserve(err, time.Since(start))
	p.watch.notify(op.ID)
	var blocked *ledger.BlockedError
	if errors.As(err, &blocked) {
		p.tellBlocked(op, blocked)
		p.alert(ctx, fmt.Sprintf(":no_entry: Blocked %s for agent %s (team %s): %s", m.Name(), pr.Name, pr.Team, blocked.Error()))
		if blocked.AutoFroze {
			// The same kill switch as a manual freeze: its pending approvals
			// are cancelled and their holds released, not left to expire.
			cancelled, ferr := Freeze(ctx, p.db, p.approvals, ledger.AgentScope(pr.Name), "repeated budget blocks", "system")
			if ferr != nil {
				p.log.Error("auto-freeze follow-up failed", "agent", pr.Name, "err", ferr)
			}
			for _, id := range cancelled {
				p.watch.notify(id)
			}
			p.alert(ctx, fmt.Sprintf(":ice_cube: Agent %s is now frozen after repeated budget blocks; %d pending operation(s) cancelled. Unfreeze with `tollgate unfreeze --agent %s`.", pr.Name, len(cancelled), pr.Name))
		}
		return
	}
	if err != nil {
		p.internal(ctx, op.ID, "reserve", err)
		return
	}

	if need.Required && mandateFor != "" {
		// Consumed with the reservation, or not at all (used up meanwhile).
		if mandateID, err := p.db.MandateOf(ctx, op.ID); err != nil {
			p.internal(ctx, op.ID, "read mandate use", err)
			return
		} else if mandateID != "" {
			if err := p.approveByMandate(ctx, reserved, mandateID); err != nil {
				p.internal(ctx, op.ID, "approve by mandate", err)
				return
			}
			p.watch.notify(op.ID)
			p.execute(ctx, op.ID)
			return
		}
	}
	if need.Required {
		p.requestApproval(ctx, reserved, plan, dec, need, pr, ci)
		return
	}
	if direct {
		p.executeReserved(ctx, reserved, m)
		return
	}
	if _, err := p.db.Transition(ctx, op.ID, ledger.StateApproved, ledger.TransitionOpts{
		From: []ledger.State{ledger.StateReserved}, Actor: "policy",
	}, ledger.NewEvent("approval.not_required", "policy", op.ID, map[string]any{"why": "reversible and no policy asked for a human"})); err != nil {
		p.internal(ctx, op.ID, "approve", err)
		return
	}
	p.watch.notify(op.ID)
	p.execute(ctx, op.ID)
}

// approvalNeed combines the hard rule (irreversible calls always need a
// human), what policy outputs ask for, and configured quorum rules. Policy
// can add approvals; nothing here can remove the hard rule.
type approvalNeed struct {
	Required  bool
	Approvals int
	Why       []string
}

func (p *Pipeline) approvalNeed(m tools.Mutation, args json.RawMessage, plan tools.Plan, d authz.Decision) approvalNeed {
	return p.needFor(plan.Irreversible || m.AlwaysNeedsApproval(args), plan.Amount, d)
}

// needFor is approvalNeed for an amount and a policy decision.
func (p *Pipeline) needFor(irreversible bool, amount money.Money, d authz.Decision) approvalNeed {
	n := approvalNeed{Approvals: 1}
	if irreversible {
		n.Required = true
		n.Why = append(n.Why, "irreversible: always needs a human")
	}
	if pol := d.Approval(); pol.Required {
		n.Required = true
		n.Approvals = max(n.Approvals, pol.Approvals)
		n.Why = append(n.Why, pol.Why...)
	}
	for _, q := range p.quorum {
		// An amount in another currency cannot be compared without a rate,
		// so the rule applies: fail closed.
		above := amount.Currency != q.above.Currency || amount.Micros > q.above.Micros
		if above && !amount.IsZero() && q.approvers > n.Approvals {
			n.Required = true
			n.Approvals = q.approvers
			n.Why = append(n.Why, fmt.Sprintf("above %s (or in another currency) needs %d approvers", q.above, q.approvers))
		}
	}
	return n
}

func (p *Pipeline) requestApproval(ctx context.Context, op ledger.Operation, plan tools.Plan, d authz.Decision, need approvalNeed, pr Principal, ci ledger.ClientInfo) {
	expires := p.now().Add(p.cfg.Approvals.Expiry)
	if _, err := p.db.Transition(ctx, op.ID, ledger.StateAwaitingApproval, ledger.TransitionOpts{
		From: []ledger.State{ledger.StateReserved}, ExpiresAt: &expires, Actor: "system",
	}); err != nil {
		p.internal(ctx, op.ID, "await approval", err)
		return
	}
	p.watch.notify(op.ID)
	policy := "allowed"
	if d.Policy != "" {
		policy += " by " + d.Policy
	}
	req := approvals.Request{
		OperationID: op.ID, Tool: op.Tool, Agent: pr.Name, Team: pr.Team, Owner: pr.Owner,
		Client: clientLabel(ci), Summary: plan.Summary, Args: plan.Fields, Module: plan.Module,
		AmountMicros: plan.Amount.Micros, Currency: plan.Amount.Currency, AmountText: plan.Amount.String(),
		Headroom: p.headroomLines(ctx, pr), Reason: op.Reason,
		Policy:   policy + "; approval: " + strings.Join(need.Why, "; "),
		ArgsHash: op.ArgsHash, Irreversible: plan.Irreversible, Quorum: need.Approvals, ExpiresAt: expires,
	}
	p.term.announce(op.ID)
	created, err := p.approvals.Request(ctx, req)
	if err != nil {
		p.term.forget(op.ID)
		p.log.Error("approval request failed; releasing", "operation", op.ID, "err", err)
		p.releaseIf(ctx, op.ID, []ledger.State{ledger.StateAwaitingApproval}, ledger.StateFailed, "approval_unavailable",
			"could not record the approval request: "+err.Error())
		return
	}
	p.term.requested(created)
	if p.term != nil {
		p.following.Add(1)
		p.goRun(func(ctx context.Context) { p.followDecision(ctx, op.ID) })
	}
	p.notify.tellAgent(op.Agent, mcp.LoggingLevelNotice, loggerApprovals, agentMessage{
		Event: "approval_requested", OperationID: op.ID, Tool: op.Tool, Code: created.ID,
		Message: fmt.Sprintf("%s of %s (%s) waits for %s (approval %s, expires %s); get_operation %s follows it",
			op.Tool, op.Resource, plan.Amount, plural(need.Approvals, "human approver"), created.ID, expires.UTC().Format(time.RFC3339), op.ID),
	})
}

// tellBlocked tells the agent that a budget, limit or freeze refused op.
func (p *Pipeline) tellBlocked(op ledger.Operation, b *ledger.BlockedError) {
	level, logger := mcp.LoggingLevelWarning, loggerBudget
	if b.Kind == ledger.BlockFrozen {
		level, logger = mcp.LoggingLevelError, loggerFreeze
	}
	p.notify.tellAgent(op.Agent, level, logger, agentMessage{
		Event: "blocked", OperationID: op.ID, Tool: op.Tool, Code: b.Code(),
		Message: fmt.Sprintf("%s of %s refused: %s", op.Tool, op.Resource, b.Error()),
	})
}

// The logger names of the messages agents receive (notifications/message).
const (
	loggerPolicy    = "tollgate.policy"
	loggerBudget    = "tollgate.budget"
	loggerApprovals = "tollgate.approvals"
	loggerFreeze    = "tollgate.freeze"
)

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

func clientLabel(ci ledger.ClientInfo) string {
	s := strings.TrimSpace(ci.Name + " " + ci.Version)
	if s == "" {
		s = "unknown client"
	}
	if ci.SessionID != "" {
		s += " (session " + ci.SessionID + ")"
	}
	return s + " via " + ci.Transport
}

func (p *Pipeline) headroomLines(ctx context.Context, pr Principal) []string {
	sts, err := p.db.BudgetStatuses(ctx, ledger.AgentScope(pr.Name), ledger.TeamScope(pr.Team), ledger.GlobalScope)
	if err != nil {
		return []string{"budget headroom unavailable: " + err.Error()}
	}
	var out []string
	for _, s := range sts {
		out = append(out, fmt.Sprintf("%s %s — %s left of %s", s.Budget.Scope, s.Budget.Window, s.Remaining, s.Budget.Limit))
	}
	if len(out) == 0 {
		out = []string{"no budgets configured"}
	}
	return out
}

// deny ends a planned Operation refused by policy.
func (p *Pipeline) deny(ctx context.Context, op ledger.Operation, res authz.Resource, action string, d authz.Decision, actor string, events ...ledger.Event) {
	code, msg := denyCode(d), denyReason(action, d)
	events = append(events, decisionEvent(actor, op.ID, res, action, d))
	p.end(ctx, op.ID, []ledger.State{ledger.StatePlanned}, ledger.StateDenied, code, msg, events...)
	p.notify.tellAgent(op.Agent, mcp.LoggingLevelWarning, loggerPolicy, agentMessage{
		Event: "policy_denied", OperationID: op.ID, Tool: op.Tool, Code: code,
		Message: fmt.Sprintf("policy refused %s of %s: %s", op.Tool, op.Resource, msg),
	})
}

func denyCode(d authz.Decision) string {
	if d.Unavailable {
		return "policy_unavailable"
	}
	return "policy_denied"
}

func denyReason(action string, d authz.Decision) string {
	if msg := strings.Join(d.Reasons, "; "); msg != "" {
		return msg
	}
	return "no policy rule allows " + action
}

// end moves an Operation that holds nothing to a terminal state.
func (p *Pipeline) end(ctx context.Context, id string, from []ledger.State, to ledger.State, code, msg string, events ...ledger.Event) {
	if _, err := p.db.Transition(ctx, id, to, ledger.TransitionOpts{From: from, ErrorCode: code, Error: msg, Actor: "system"}, events...); err != nil {
		p.log.Error("end operation failed", "operation", id, "to", to, "err", err)
	}
	p.watch.notify(id)
}

// release moves an Operation that may hold budget to a terminal state,
// releasing its holds.
func (p *Pipeline) release(ctx context.Context, id string, to ledger.State, code, msg string, events ...ledger.Event) {
	if _, err := p.db.Release(ctx, id, to, code, msg, events...); err != nil && !errors.Is(err, ledger.ErrStateConflict) {
		p.log.Error("release failed", "operation", id, "to", to, "err", err)
	}
	p.watch.notify(id)
	if req, err := p.approvals.ByOperation(ctx, id); err == nil && req.State == approvals.StatePending {
		_ = p.approvals.Cancel(ctx, req.ID, msg, "system")
	}
}

// internal handles a fault of tollgate itself: fail closed and release.
func (p *Pipeline) internal(ctx context.Context, id, step string, err error) {
	p.log.Error("pipeline fault; failing closed", "operation", id, "step", step, "err", err)
	p.release(ctx, id, ledger.StateFailed, "internal_error", step+": "+err.Error())
}

func (p *Pipeline) alert(ctx context.Context, text string) {
	if err := p.approvals.Notify(ctx, text); err != nil {
		p.log.Warn("alert not delivered", "err", err)
	}
}

// execute runs an approved Operation: consume its approval, mint a token for
// it alone, mark it executing, call Cloudflare, revoke the token, settle.
func (p *Pipeline) execute(ctx context.Context, id string) {
	ctx, owned := ledger.WithJournal(ctx)
	if owned {
		defer p.flush(ctx, id)
	}
	op, err := p.db.Operation(ctx, id)
	if err != nil || op.State != ledger.StateApproved {
		return
	}
	if !p.leaseHeld() {
		// Another process found this one dead and took its work over:
		// it executes what is approved, after asking Cloudflare.
		p.log.Error("lease lost; not executing", "operation", id)
		return
	}
	m, ok := p.muts[op.Tool]
	if !ok {
		p.release(ctx, id, ledger.StateFailed, "unknown_tool", "no executor for "+op.Tool)
		return
	}
	// A freeze that landed after the approval still stops the execution:
	// nothing has reached Cloudflare yet.
	if f, err := p.db.FrozenFor(ctx, op.Agent, op.Team); err != nil || f != nil {
		msg := "freezes unreadable; refusing"
		if f != nil {
			msg = fmt.Sprintf("%s is frozen (%s): not executed", f.Scope, f.Reason)
		}
		p.releaseIf(ctx, id, []ledger.State{ledger.StateApproved}, ledger.StateCancelled, "frozen", msg)
		return
	}
	req, err := p.approvals.ByOperation(ctx, id)
	switch {
	case err == nil:
		if err := p.approvals.Consume(ctx, req.ID, op.ArgsHash, op.Quote.Micros, op.Quote.Currency); err != nil {
			if errors.Is(err, approvals.ErrConsumed) {
				// Only an execution of this very operation consumes its
				// approval, and one that got past executing would have moved
				// it on: that execution stopped with the process, before
				// Cloudflare. The approval stays single-use: fail closed.
				p.release(ctx, id, ledger.StateFailed, "interrupted",
					"tollgate stopped after using this operation's single-use approval and before anything reached Cloudflare; nothing was charged, ask again")
				return
			}
			p.release(ctx, id, ledger.StateFailed, "approval_invalid", "the approval does not cover this execution: "+err.Error())
			return
		}
	case errors.Is(err, approvals.ErrNotFound):
		mandateID, merr := p.db.MandateOf(ctx, id)
		if merr != nil {
			p.internal(ctx, id, "read mandate use", merr)
			return
		}
		if m.AlwaysNeedsApproval(op.Args) && mandateID == "" {
			p.release(ctx, id, ledger.StateFailed, "approval_missing", "irreversible operation has no approval; refusing")
			return
		}
	default:
		p.internal(ctx, id, "load approval", err)
		return
	}
	p.runExecution(ctx, op, m, req.ID)
}

// executeReserved runs an Operation that Reserve already moved to executing
// (no human had to approve it): mint its token, call Cloudflare, revoke,
// settle.
func (p *Pipeline) executeReserved(ctx context.Context, op ledger.Operation, m tools.Mutation) {
	p.watch.notify(op.ID)
	p.runExecution(ctx, op, m, "")
}

// runExecution mints op's token, moves op to executing (unless it already
// is), calls Cloudflare, revokes the token and settles.
func (p *Pipeline) runExecution(ctx context.Context, op ledger.Operation, m tools.Mutation, reqID string) {
	id := op.ID
	var blob []byte
	if op.BlobSHA256 != "" {
		var err error
		if blob, err = p.db.Blob(ctx, op.BlobSHA256); err != nil {
			p.internal(ctx, id, "load module", err)
			return
		}
	}
	from := op.State
	var out tools.Outcome
	var execErr error
	started := false
	spec, err := p.executeSpec(ctx, m, op)
	if err != nil {
		p.releaseIf(ctx, id, []ledger.State{from}, ledger.StateFailed, "token_unavailable", "could not scope the execution's token: "+err.Error())
		p.finish(ctx, reqID, "Not executed: "+err.Error())
		return
	}
	err = p.withSpec(ctx, spec, id, func(s *cloudflare.Session) error {
		if from != ledger.StateExecuting {
			if _, err := p.db.Transition(ctx, id, ledger.StateExecuting, ledger.TransitionOpts{From: []ledger.State{ledger.StateApproved}, Actor: "system"}); err != nil {
				return err
			}
			p.watch.notify(id)
		}
		started = true
		start := time.Now()
		out, execErr = m.Execute(ctx, s, tools.ExecInput{OperationID: id, Args: op.Args, Blob: blob, MaxAmount: op.Quote})
		p.metrics.observeExecution(op.Tool, execErr, time.Since(start))
		return nil
	})
	if !started {
		// Only from the state it was read in: if the transition lost a race,
		// the Operation is someone else's to finish. Nothing reached
		// Cloudflare but the failed mint.
		p.releaseIf(ctx, id, []ledger.State{from}, ledger.StateFailed, "token_unavailable", "could not start the execution: "+errString(err))
		p.finish(ctx, reqID, "Not executed: "+errString(err))
		return
	}
	if execErr != nil {
		p.executionFailed(ctx, op, reqID, execErr)
		return
	}
	if out.Rollout != nil && !out.Rollout.Finished() {
		p.rollingOut(ctx, op, reqID, m, out)
		return
	}
	p.settle(ctx, op, reqID, out)
}

// leaseHeld reports whether this process still holds its lease (or runs
// without one): one that lost it must leave its work to the process that
// took it over.
func (p *Pipeline) leaseHeld() bool {
	l := p.db.Lease()
	if l == nil {
		return true
	}
	select {
	case <-l.Lost():
		return false
	default:
		return true
	}
}

// flush writes what is left in ctx's journal once the work that owns it
// ends.
func (p *Pipeline) flush(ctx context.Context, opID string) {
	if err := p.db.Flush(context.WithoutCancel(ctx)); err != nil {
		p.log.Error("audit records not written", "operation", opID, "err", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "unknown error"
	}
	return err.Error()
}

func (p *Pipeline) settle(ctx context.Context, op ledger.Operation, reqID string, out tools.Outcome) {
	result, err := json.Marshal(out.Result)
	if err != nil {
		p.log.Error("encode result", "operation", op.ID, "err", err)
		result = json.RawMessage(`{}`)
	}
	if _, err := p.db.Settle(ctx, op.ID, ledger.SettleRequest{Actual: out.Charged, Result: result},
		ledger.NewEvent("execution.succeeded", "system", op.ID, map[string]any{"summary": out.Summary})); err != nil {
		// Cloudflare acted but the ledger did not record it: leave the
		// Operation in_doubt so reconciliation settles it, never release.
		p.log.Error("settle failed; marking in_doubt", "operation", op.ID, "err", err)
		_, _ = p.db.Transition(ctx, op.ID, ledger.StateInDoubt, ledger.TransitionOpts{From: []ledger.State{ledger.StateExecuting}, Error: err.Error()})
	} else if out.Charged.Currency == op.Quote.Currency && out.Charged.Micros > op.Quote.Micros {
		p.overCharged(ctx, op, out.Charged)
	}
	p.watch.notify(op.ID)
	p.finish(ctx, reqID, out.Summary)
}

// overCharged follows up a settle above the approved amount: the ledger
// recorded the real charge and froze the agent in that transaction; the
// agent's other pending operations are cancelled like any freeze's, and a
// human hears about it.
func (p *Pipeline) overCharged(ctx context.Context, op ledger.Operation, charged money.Money) {
	p.log.Error("charged above the approved amount; agent frozen", "operation", op.ID, "agent", op.Agent, "approved", op.Quote.String(), "charged", charged.String())
	cancelled, err := Freeze(ctx, p.db, p.approvals, ledger.AgentScope(op.Agent), fmt.Sprintf("charged %s for %s, above the %s approved", charged, op.ID, op.Quote), ledger.ActorSystem)
	if err != nil {
		p.log.Error("over-charge freeze follow-up failed", "agent", op.Agent, "err", err)
	}
	for _, id := range cancelled {
		p.watch.notify(id)
	}
	p.alert(ctx, fmt.Sprintf(":rotating_light: Cloudflare charged %s for operation %s (%s by agent %s), above the %s that was approved. The charge is recorded; agent %s is now frozen and %d pending operation(s) were cancelled. Check the bill, then `tollgate unfreeze --agent %s`.",
		charged, op.ID, op.Tool, op.Agent, op.Quote, op.Agent, len(cancelled), op.Agent))
}

// executionFailed decides between failed (Cloudflare certainly did not act)
// and in_doubt (it may have): only the latter is reconciled before release.
func (p *Pipeline) executionFailed(ctx context.Context, op ledger.Operation, reqID string, err error) {
	var te *tools.ToolError
	var pc *tools.PriceChangedError
	var api *cloudflare.APIError
	var wf *cloudflare.WorkflowError
	code := ""
	switch {
	case errors.Is(err, cloudflare.ErrInDoubt):
		// May have acted, whatever else the error says (a refused status
		// poll after an accepted registration): ask before releasing.
	case errors.As(err, &wf) && wf.State == "failed":
		code = "registry_rejected"
	case errors.As(err, &pc):
		code = "price_changed"
	case errors.As(err, &te):
		code = te.Code
	case errors.Is(err, tools.ErrNotAttempted):
		code = "not_attempted"
	case errors.As(err, &api) && api.Status >= 400 && api.Status < 500 && api.Status != 408:
		code = "cloudflare_rejected"
	}
	if code != "" {
		p.release(ctx, op.ID, ledger.StateFailed, code, err.Error(), ledger.NewEvent("execution.failed", "system", op.ID, map[string]any{"error": err.Error()}))
		p.finish(ctx, reqID, "Failed: "+err.Error())
		return
	}
	p.log.Warn("execution outcome unknown; reconciling", "operation", op.ID, "err", err)
	if _, terr := p.db.Transition(ctx, op.ID, ledger.StateInDoubt, ledger.TransitionOpts{
		From: []ledger.State{ledger.StateExecuting}, ErrorCode: "outcome_unknown", Error: err.Error(), Actor: "system",
	}); terr != nil {
		p.log.Error("mark in_doubt", "operation", op.ID, "err", terr)
	}
	p.watch.notify(op.ID)
	p.finish(ctx, reqID, "Outcome unknown (Cloudflare error: "+err.Error()+"); reconciling")
	p.goRun(func(ctx context.Context) { p.reconcile(ctx, op.ID) })
}

func (p *Pipeline) finish(ctx context.Context, reqID, text string) {
	if reqID == "" {
		return
	}
	p.term.finished(reqID, text)
	if err := p.approvals.Finish(ctx, reqID, text); err != nil {
		p.log.Warn("approval message not updated", "approval", reqID, "err", err)
	}
}

// askCloudflare asks Cloudflare, under a token minted for it, whether an
// Operation's change is in place (Mutation.Reconcile).
func (p *Pipeline) askCloudflare(ctx context.Context, op ledger.Operation, m tools.Mutation) (out tools.Outcome, found bool, err error) {
	spec := cloudflare.SessionSpec{Name: string(cloudflare.PurposeInspect), Label: op.ID, Permissions: m.Access().Reconcile}
	err = p.withSpec(ctx, spec, op.ID, func(s *cloudflare.Session) error {
		var err error
		out, found, err = m.Reconcile(ctx, s, tools.ExecInput{OperationID: op.ID, Args: op.Args, MaxAmount: op.Quote})
		return err
	})
	return out, found, err
}

// reconcile asks Cloudflare whether an in_doubt Operation took effect, then
// settles or releases it. Errors leave it in_doubt for the next pass.
func (p *Pipeline) reconcile(ctx context.Context, id string) {
	op, err := p.db.Operation(ctx, id)
	if err != nil || op.State != ledger.StateInDoubt {
		return
	}
	m, ok := p.muts[op.Tool]
	if !ok {
		return
	}
	out, found, err := p.askCloudflare(ctx, op, m)
	if err != nil {
		p.log.Warn("reconcile failed; will retry", "operation", id, "err", err)
		return
	}
	req, _ := p.approvals.ByOperation(ctx, id)
	if !found {
		p.release(ctx, id, ledger.StateFailed, "not_executed", "Cloudflare shows the operation did not take effect; nothing was charged",
			ledger.NewEvent("reconcile.not_found", "system", id, nil))
		p.finish(ctx, req.ID, "Did not take effect (checked with Cloudflare after an interruption)")
		return
	}
	if out.Rollout != nil && !out.Rollout.Finished() {
		// Cloudflare says the rollout stopped half-way: it goes on from the
		// step in force (one approval covered every step).
		if _, err := p.db.Transition(ctx, id, ledger.StateExecuting, ledger.TransitionOpts{From: []ledger.State{ledger.StateInDoubt}, Actor: "system"},
			ledger.NewEvent("rollout.resumed", "system", id, map[string]any{
				"summary": fmt.Sprintf("resumed after an interruption at %d%% (step %d of %d), as Cloudflare's deployment in force shows", out.Rollout.Percent(), out.Rollout.Done, len(out.Rollout.Steps)),
				"version": out.Rollout.Version, "previous": out.Rollout.Previous, "percent": out.Rollout.Percent(),
			})); err != nil {
			p.log.Warn("resume rollout failed; will retry", "operation", id, "err", err)
			return
		}
		p.watch.notify(id)
		r := out.Rollout
		p.goRun(func(ctx context.Context) { p.continueRollout(ctx, op, req.ID, m, r) })
		return
	}
	p.settle(ctx, op, req.ID, out)
}

// await follows an Operation for a tool call and returns it when it is
// terminal, or once it has waited approvalWait for a human, or when the
// caller goes away, reporting each state change as progress. Planning and
// execution are not counted against approvalWait (only against
// maxExecutionWait), so a zero wait still returns a planned Operation as
// awaiting_approval rather than half-way through its checks.
func (p *Pipeline) await(ctx context.Context, id string, approvalWait time.Duration, progress func(string), untilSettled bool) (tools.OperationView, error) {
	if progress == nil {
		progress = func(string) {}
	}
	wake, stop := p.changes(id)
	defer stop()
	overall := time.NewTimer(approvalWait + maxExecutionWait)
	defer overall.Stop()
	var approvalDeadline <-chan time.Time
	var last ledger.State
	var seen ledger.Operation
	first := true
	for {
		op, err := p.db.Operation(ctx, id)
		if err != nil {
			if ctx.Err() != nil && !first {
				// The caller's wait ended during the read: answer with what
				// was seen last, as the select below would have.
				return p.view(context.WithoutCancel(ctx), seen), nil
			}
			return tools.OperationView{}, fmt.Errorf("read operation: %w", err)
		}
		seen = op
		if op.State != last {
			progress(describeState(op))
			if !first && !untilSettled {
				return p.view(ctx, op), nil
			}
			last, first = op.State, false
		}
		if op.State.Terminal() {
			return p.view(ctx, op), nil
		}
		if op.State == ledger.StateAwaitingApproval && approvalDeadline == nil {
			if approvalWait <= 0 {
				return p.view(ctx, op), nil
			}
			t := time.NewTimer(approvalWait)
			defer t.Stop()
			approvalDeadline = t.C
		}
		select {
		case <-wake:
		case <-approvalDeadline:
			return p.view(ctx, op), nil
		case <-overall.C:
			return p.view(ctx, op), nil
		case <-ctx.Done():
			return p.view(context.WithoutCancel(ctx), op), nil
		}
	}
}

// maxExecutionWait bounds how long a call follows planning and execution
// (a registration the registry holds for minutes, say) before returning the
// Operation as it stands, with how to resume.
const maxExecutionWait = 60 * time.Second

func describeState(op ledger.Operation) string {
	switch op.State {
	case ledger.StateAwaitingApproval:
		exp := ""
		if op.ExpiresAt != nil {
			exp = " (expires " + op.ExpiresAt.UTC().Format(time.RFC3339) + ")"
		}
		return "waiting for a human approver (the console, Slack, or tollgate approvals approve)" + exp
	case ledger.StateExecuting:
		return "approved; executing at Cloudflare"
	}
	return "operation " + op.ID + " is " + string(op.State)
}

// view is an Operation with its approval.
func (p *Pipeline) view(ctx context.Context, op ledger.Operation) tools.OperationView {
	v := tools.ViewOf(op)
	if req, err := p.approvals.ByOperation(ctx, op.ID); err == nil {
		av := &tools.ApprovalView{ID: req.ID, State: req.State, Approvals: req.Approvals(), Needed: max(req.Quorum, 1), ExpiresAt: req.ExpiresAt, Reason: req.DecidedReason}
		for _, vote := range req.Votes {
			av.DecidedBy = append(av.DecidedBy, vote.Approver+" ("+vote.Outcome+" via "+vote.Via+")")
		}
		v.Approval = av
	}
	return v
}

// Operation implements tools.Runner.
func (p *Pipeline) Operation(ctx context.Context, id string, wait time.Duration, history bool) (tools.OperationView, error) {
	pr, ci, err := p.caller(ctx)
	if err != nil {
		return tools.OperationView{}, err
	}
	op, err := p.db.Operation(ctx, id)
	notFound := &tools.ToolError{Code: "not_found", Message: fmt.Sprintf("no operation %s that you can read", id)}
	if errors.Is(err, ledger.ErrNotFound) {
		return tools.OperationView{}, notFound
	}
	if err != nil {
		return tools.OperationView{}, fmt.Errorf("read operation: %w", err)
	}
	res := operationResource(op)
	d := p.decide(ctx, p.principal(pr, ci), res, "read")
	if err := p.db.Record(ctx, decisionEvent(pr.actor(), op.ID, res, "read", d)); err != nil {
		return tools.OperationView{}, &tools.ToolError{Code: "audit_unavailable", Message: "audit trail unavailable; refusing"}
	}
	if !d.Allowed {
		if d.Unavailable {
			return tools.OperationView{}, tools.PolicyDenied("read", res, d)
		}
		return tools.OperationView{}, notFound
	}
	if wait > 0 && !op.State.Terminal() {
		wctx, cancel := context.WithTimeout(ctx, wait)
		_, err := p.await(wctx, id, wait, nil, false)
		cancel()
		if err != nil && ctx.Err() == nil {
			return tools.OperationView{}, err
		}
		if op, err = p.db.Operation(ctx, id); err != nil {
			return tools.OperationView{}, fmt.Errorf("read operation: %w", err)
		}
	}
	v := p.view(ctx, op)
	if !history {
		return v, nil
	}
	hist, err := p.db.History(ctx, id)
	if err != nil {
		return tools.OperationView{}, fmt.Errorf("read history: %w", err)
	}
	for _, e := range hist {
		if operationRead(e) {
			continue
		}
		v.History = append(v.History, historyEntry(e))
	}
	return v, nil
}

// operationRead reports whether e is the audited decision of a read of the
// operation itself. Reads stay in the audit trail but are not the
// operation's story: an agent polling get_operation would otherwise grow
// every answer by one history entry per poll.
func operationRead(e ledger.Event) bool {
	if e.Type != "policy.decision" {
		return false
	}
	var d struct {
		Resource string `json:"resource"`
	}
	return json.Unmarshal(e.Data, &d) == nil && strings.HasPrefix(d.Resource, "operation:")
}

func operationResource(op ledger.Operation) authz.Resource {
	return authz.Resource{Kind: "operation", ID: op.ID, Attr: map[string]any{
		"agent": op.Agent, "team": op.Team, "tool": op.Tool, "state": string(op.State),
	}}
}

func historyEntry(e ledger.Event) tools.HistoryEntry {
	h := tools.HistoryEntry{At: e.At, Event: e.Type, Actor: e.Actor}
	var data map[string]any
	if json.Unmarshal(e.Data, &data) == nil {
		switch e.Type {
		case "operation.state":
			h.Note = fmt.Sprintf("%v → %v", data["from"], data["to"])
			if msg, _ := data["error"].(string); msg != "" {
				h.Note += ": " + msg
			}
		case "policy.decision":
			h.Note = fmt.Sprintf("%v %v: allowed=%v", data["action"], data["resource"], data["allowed"])
		default:
			if s, _ := data["summary"].(string); s != "" {
				h.Note = s
			}
		}
	}
	return h
}

// Operations implements tools.Runner. Each operation on the page is
// checked with Cerbos in one batch; the caller sees only what it may read.
func (p *Pipeline) Operations(ctx context.Context, q tools.ListOperationsArgs) (tools.OperationList, error) {
	pr, ci, err := p.caller(ctx)
	if err != nil {
		return tools.OperationList{}, err
	}
	lq := ledger.OperationQuery{Agent: pr.Name, Cursor: q.Cursor}
	if q.Limit != nil {
		lq.Limit = *q.Limit
	}
	if q.Status != "" {
		lq.States = []ledger.State{ledger.State(q.Status)}
	}
	ops, next, err := p.db.ListOperations(ctx, lq)
	if err != nil {
		return tools.OperationList{}, &tools.ToolError{Code: "bad_cursor", Message: "could not list operations: " + err.Error()}
	}
	checks := make([]authz.Check, len(ops))
	for i, op := range ops {
		checks[i] = authz.Check{Resource: operationResource(op), Actions: []string{"read"}}
	}
	var decisions [][]authz.Decision
	if len(checks) > 0 {
		decisions = p.authz.CheckBatch(ctx, p.principal(pr, ci), checks)
	}
	out := tools.OperationList{Operations: []tools.OperationView{}, NextCursor: next}
	for i, op := range ops {
		if i < len(decisions) && len(decisions[i]) == 1 && decisions[i][0].Allowed {
			out.Operations = append(out.Operations, tools.ViewOf(op))
		}
	}
	return out, nil
}

// Estimate implements tools.Runner: plan, the policy decision for the real
// action, budget headroom and approval need, all without side effects.
func (p *Pipeline) Estimate(ctx context.Context, m tools.Mutation, call tools.Call) (tools.EstimateResult, error) {
	pr, ci, err := p.caller(ctx)
	if err != nil {
		return tools.EstimateResult{}, err
	}
	pd, err := p.planAndDecide(ctx, m, p.principal(pr, ci), call.Args, call.Blob, "estimate")
	if err != nil {
		return tools.EstimateResult{}, err
	}
	// Every decision is in the audit trail: recorded in the call's journal,
	// committed with the call's other records when it ends (auditCalls).
	events := []ledger.Event{decisionEvent(pr.actor(), "", pd.pre, "estimate", pd.preDecision)}
	if pd.preDecision.Allowed && pd.planErr == nil {
		events = append(events, decisionEvent(pr.actor(), "", pd.plan.Resource, m.Action(), pd.decision))
	}
	if err := p.db.Record(ctx, events...); err != nil {
		p.log.Error("audit append failed; denying", "err", err)
		return tools.EstimateResult{}, &tools.ToolError{Code: "audit_unavailable", Message: "audit trail unavailable; refusing"}
	}
	if !pd.preDecision.Allowed {
		p.tellDenied(pr, pd.pre, "estimate", pd.preDecision)
		return tools.EstimateResult{}, tools.PolicyDenied("estimate", pd.pre, pd.preDecision)
	}
	if pd.planErr != nil {
		return tools.EstimateResult{}, pd.planErr
	}
	plan, real := pd.plan, pd.decision
	sts, blocked, err := p.db.CheckBudget(ctx, ledger.ReserveRequest{
		Agent: pr.Name, Team: pr.Team, Action: m.Name(), Amount: plan.Amount, Commitment: plan.Commitment,
	})
	if err != nil {
		return tools.EstimateResult{}, fmt.Errorf("check budget: %w", err)
	}
	need := p.approvalNeed(m, call.Args, plan, real)
	res := tools.EstimateResult{
		Action:         m.Name(),
		Resource:       call.Resource,
		Amount:         tools.AmountOf(plan.Amount),
		Breakdown:      plan.Breakdown,
		Basis:          plan.Basis,
		QuoteExpiresAt: plan.QuoteExpiresAt,
		Policy:         tools.PolicyView{Allowed: real.Allowed, Reasons: real.Reasons},
		Budgets:        []tools.BudgetView{},
		WouldBlock:     blocked != nil,
		Approval:       tools.ApprovalNeed{Required: need.Required, Why: strings.Join(need.Why, "; ")},
	}
	if need.Required {
		res.Approval.Approvals = need.Approvals
		// A call a mandate covers asks no human, so whether approvers could
		// meet the quorum does not matter to it.
		if md := p.coveringMandate(ctx, pr, ci, m, plan, need); md != nil {
			left := money.Money{Micros: md.MaxTotal.Micros - md.UsedMicros, Currency: md.MaxTotal.Currency}
			remaining, expires := tools.AmountOf(left), md.ExpiresAt
			res.Approval.CoveredByMandate, res.Approval.RemainingUses = md.ID, md.Count-md.Used
			res.Approval.MandateRemaining, res.Approval.MandateExpiresAt = &remaining, &expires
			res.Approval.Why += fmt.Sprintf("; covered by standing approval %s (given by %s): no human is asked", md.ID, md.CreatedBy)
		} else {
			res.Approval.Unavailable = p.quorumShortfall(ctx, pr, m.Name(), plan.Irreversible, plan.Amount, need)
		}
	}
	var reasons []string
	if blocked != nil {
		reasons = append(reasons, blocked.Error())
	}
	if res.Approval.Unavailable != "" {
		res.WouldBlock = true
		reasons = append(reasons, "approval unavailable: "+res.Approval.Unavailable)
	}
	res.BlockReason = strings.Join(reasons, "; ")
	for _, s := range sts {
		b := tools.BudgetViewOf(s)
		fits := s.Remaining.Currency == plan.Amount.Currency && s.Remaining.Micros >= plan.Amount.Micros
		b.Fits = &fits
		res.Budgets = append(res.Budgets, b)
	}
	return res, nil
}

// SpendStatus implements tools.Runner.
func (p *Pipeline) SpendStatus(ctx context.Context) (tools.SpendStatusResult, error) {
	pr, _, err := p.caller(ctx)
	if err != nil {
		return tools.SpendStatusResult{}, err
	}
	res := authz.Resource{Kind: "spend", ID: pr.Name, Attr: map[string]any{"agent": pr.Name, "team": pr.Team}}
	if d := p.Authorize(ctx, res, "read"); !d.Allowed {
		return tools.SpendStatusResult{}, tools.PolicyDenied("read", res, d)
	}
	scopes := []ledger.Scope{ledger.AgentScope(pr.Name), ledger.TeamScope(pr.Team), ledger.GlobalScope}
	out := tools.SpendStatusResult{Agent: pr.Name, Team: pr.Team, Spend: []tools.SpendView{}, Budgets: []tools.BudgetView{}, Limits: []tools.LimitView{}, Frozen: []tools.FreezeView{}}
	totals, err := p.db.SpendTotals(ctx, scopes...)
	if err != nil {
		return out, err
	}
	for _, t := range totals {
		out.Spend = append(out.Spend, tools.SpendView{Scope: string(t.Scope), Window: string(t.Window), Period: t.Period, Spent: tools.AmountOf(t.Spent), Held: tools.AmountOf(t.Held)})
	}
	sts, err := p.db.BudgetStatuses(ctx, scopes...)
	if err != nil {
		return out, fmt.Errorf("budgets: %w", err)
	}
	for _, s := range sts {
		out.Budgets = append(out.Budgets, tools.BudgetViewOf(s))
	}
	for _, action := range tools.RateLimited() {
		ls, err := p.db.LimitStatuses(ctx, action, scopes...)
		if err != nil {
			return out, fmt.Errorf("limits: %w", err)
		}
		for _, l := range ls {
			out.Limits = append(out.Limits, tools.LimitView{Scope: string(l.Limit.Scope), Action: l.Limit.Action, Window: string(l.Limit.Window), Max: l.Limit.Max, Used: l.Count, ResetsAt: l.ResetsAt})
		}
	}
	fs, err := p.db.Freezes(ctx)
	if err != nil {
		return out, fmt.Errorf("freezes: %w", err)
	}
	for _, f := range fs {
		if f.Scope == ledger.GlobalScope || f.Scope == scopes[0] || f.Scope == scopes[1] {
			out.Frozen = append(out.Frozen, tools.FreezeView{Scope: string(f.Scope), Reason: f.Reason, By: f.By, At: f.At, Auto: f.Auto})
		}
	}
	return out, nil
}
