package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/tools"
)

// quorumShortfall says why the configured approvers could never approve a
// call of agent pr needing need ("" when they can): fewer of them than the
// quorum are neither the agent nor its owner and allowed by the policy to
// approve it. Such a request would fail at once with approval_unavailable,
// so estimate_cost reports it and start-up warns about it.
func (p *Pipeline) quorumShortfall(ctx context.Context, pr Principal, tool string, irreversible bool, amount money.Money, need approvalNeed) string {
	if !need.Required || p.approvals == nil {
		return ""
	}
	eligible := p.approvals.Eligible(ctx, quorumRequest(pr, tool, irreversible, amount, need.Approvals), need.Approvals)
	if len(eligible) >= need.Approvals {
		return ""
	}
	who := "none of the configured approvers"
	if len(eligible) > 0 {
		who = "only " + strings.Join(eligible, ", ")
	}
	return fmt.Sprintf("%s of %s needs %s (%s), and %s may approve it (not the agent or its owner %q, and allowed by the policy); add approvers: to tollgate.yaml",
		tool, amount, plural(need.Approvals, "distinct approver"), strings.Join(need.Why, "; "), who, pr.Owner)
}

// quorumRequest is the request an estimate asks the approvers' eligibility
// about: the one the call would post.
func quorumRequest(pr Principal, tool string, irreversible bool, amount money.Money, quorum int) approvals.Request {
	return approvals.Request{
		ID: "apr_estimate", Tool: tool, Agent: pr.Name, Team: pr.Team, Owner: pr.Owner,
		AmountMicros: amount.Micros, Currency: amount.Currency, Irreversible: irreversible, Quorum: quorum,
	}
}

// EligibilityCheck is the policy check estimate_cost makes, for a call of
// agent a that waits for a human, to learn whether approver b may approve it
// (the first check of approvals.Service.Eligible; the quorum is not part of
// it). `tollgate load --compare-pdp` replays it against the raw PDP.
func EligibilityCheck(a AgentConfig, b ApproverConfig, tool string, irreversible bool, amount money.Money) (authz.Principal, authz.Resource) {
	r := quorumRequest(principalFromConfig(a, ""), tool, irreversible, amount, 0)
	return approvalCheck(approvals.Approver{Name: b.Name, SlackUserID: b.SlackUserID, OSUser: b.OSUser, Roles: b.Roles}, r)
}

// quorumProbe is one kind of call the start-up check asks about: for each
// tool some of whose calls always wait for a human, the costliest such
// call the policy allows (tools.ApprovalTraits.QuorumProbe), so a tier the
// policy puts above any real call's price is seen too.
type quorumProbe struct {
	tool, action string
	tools.QuorumProbe
}

// quorumProbes are the inventory's probes for agent a: a registration at
// the policy's price ceiling, a production deploy holding the monthly plan,
// a production attach of an apex, a detach.
func (s *Server) quorumProbes(a AgentConfig) []quorumProbe {
	ceiling := money.Money{Micros: 50_000_000, Currency: "USD"}
	tld := "dev"
	if s.deps.PolicyDir != "" {
		if c, err := guardrails(s.deps.PolicyDir); err == nil {
			cur, _ := c["currency"].(string)
			if n, ok := c["max_registration_price_micros"].(int); ok && cur != "" {
				ceiling = money.Money{Micros: int64(n), Currency: cur}
			}
			if tlds, ok := c["registrable_tlds"].([]any); ok && len(tlds) > 0 {
				tld = fmt.Sprint(tlds[0])
			}
		}
	}
	book, _ := s.cfg.Pricing.Workers.book()
	env := tools.ProbeEnv{Team: a.Team, TLD: tld, RegistrationCeiling: ceiling, Config: tools.Config{Workers: book}}
	var out []quorumProbe
	for _, t := range tools.Inventory() {
		if t.Approval.QuorumProbe != nil {
			out = append(out, quorumProbe{tool: t.Name, action: t.Action, QuorumProbe: t.Approval.QuorumProbe(env)})
		}
	}
	return out
}

// logApprovers says at start who may approve and how, and warns about every
// kind of call a configured agent may make whose quorum the approvers can
// never meet (it would fail with approval_unavailable instead of waiting).
func (s *Server) logApprovers(ctx context.Context) {
	aps := s.approvals.Approvers()
	if len(aps) == 0 {
		s.log.Warn("no approvers configured: every registration and production deploy will fail; list them under approvers: in tollgate.yaml")
	}
	for _, a := range aps {
		var via []string
		if a.SlackUserID != "" {
			via = append(via, "Slack "+a.SlackUserID)
		}
		os := a.OSUser
		if os == "" {
			os = a.Name
		}
		via = append(via, "CLI and console as OS user "+os)
		s.log.Info("approver", "name", a.Name, "roles", strings.Join(a.Roles, ","), "votes_via", strings.Join(via, "; "))
	}
	short, skipped := 0, 0
	for _, a := range s.cfg.Agents {
		if ctx.Err() != nil {
			return
		}
		pr := principalFromConfig(a, "startup-check")
		probes := s.quorumProbes(a)
		checks := make([]authz.Check, len(probes))
		for i, pb := range probes {
			checks[i] = authz.Check{Resource: pb.Resource, Actions: []string{pb.action}}
		}
		// One policy call per agent for its probes.
		ds := s.pipe.decideAll(ctx, s.pipe.principal(pr, ledger.ClientInfo{Transport: "startup-check"}), checks...)
		for i, pb := range probes {
			d := ds[i]
			if d.Unavailable {
				skipped++
				continue
			}
			if !d.Allowed {
				continue // the policy refuses this agent the call anyway
			}
			// A probe is a call that always waits for a human.
			need := s.pipe.needFor(true, pb.Amount, d)
			if why := s.pipe.quorumShortfall(ctx, pr, pb.tool, pb.Irreversible, pb.Amount, need); why != "" {
				short++
				s.log.Warn("approval quorum cannot be met: such calls will fail instead of waiting", "agent", a.Name, "why", why)
			}
		}
	}
	switch {
	case skipped > 0:
		s.log.Warn("approval quorum check incomplete: the policy engine did not answer", "checks_skipped", skipped)
	case short == 0:
		s.log.Info("approval quorums checked: the configured approvers can approve every configured agent's calls that always wait for a human")
	}
}
