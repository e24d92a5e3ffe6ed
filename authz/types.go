package authz

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Principal is who asks: an agent (id = agent name) or a human approver
// (id = approver name). Attr values may be strings, bools, integers (up to
// ±2^53, which JSON numbers carry exactly), floats, time.Time, and slices or
// string-keyed maps of those.
type Principal struct {
	ID    string
	Roles []string
	Attr  map[string]any
}

// Resource is what the principal acts on: Kind is the Cerbos resource kind
// ("domain", "worker_script", "operation", "approval"), ID its identifier.
// Attr follows the same value rules as [Principal.Attr].
type Resource struct {
	Kind string
	ID   string
	Attr map[string]any
}

// Output is one rule output the PDP returned for an action.
type Output struct {
	// Source is the rule that produced it, e.g. "resource.domain.vdefault#price-ceiling".
	Source string
	// Value is the evaluated output: string, bool, float64 (JSON numbers),
	// []any or map[string]any. Nil when Error is set.
	Value any
	// Error is set when the PDP failed to evaluate the output expression.
	Error string
}

// Decision is the PDP's answer for one action on one resource.
type Decision struct {
	Action  string
	Allowed bool
	// Reasons are human sentences explaining a deny, taken from the string
	// outputs of the deciding rules, or written by this package when the PDP
	// gave none (no matching rule, schema rejection, PDP unavailable). Never
	// empty when Allowed is false; empty when allowed.
	Reasons []string
	// Outputs holds every rule output for this action, allowed or not.
	Outputs []Output
	// Policy is the policy that decided, e.g. "resource.domain.vdefault", for
	// the audit trail. Empty when the PDP could not be asked.
	Policy string
	// Unavailable is true when the deny happened because the PDP could not be
	// asked or gave no usable answer, as opposed to a policy deny.
	Unavailable bool
}

// Check is one resource and the actions to check on it, for [Client.CheckBatch].
type Check struct {
	Resource Resource
	Actions  []string
}

// ApprovalNeed is what the policy outputs of a decision ask of the approval
// step. It only ever adds requirements: tollgate's own rules (irreversible
// actions always need a human) apply regardless.
type ApprovalNeed struct {
	// Required is true when any output asked for a human approval.
	Required bool
	// Approvals is the number of distinct approvers required; at least 1 when
	// Required, 0 otherwise.
	Approvals int
	// Why lists the explanations the outputs gave, in output order.
	Why []string
}

// Output keys of the approval convention (see cerbos-policies/README.md).
const (
	outputRequireApproval   = "require_approval"
	outputApprovalsRequired = "approvals_required"
	outputWhy               = "why"
	maxApprovalsRequired    = 100
)

// Approval folds the map outputs of d into one requirement. A map output with
// "require_approval": true or "approvals_required": N asks for approval; the
// largest N wins. An output that names either key with a malformed value is
// treated as asking for one approval, so a typo in a policy never silently
// drops a requirement.
func (d Decision) Approval() ApprovalNeed {
	var need ApprovalNeed
	for _, o := range d.Outputs {
		m, ok := o.Value.(map[string]any)
		if !ok {
			continue
		}
		rawReq, hasReq := m[outputRequireApproval]
		rawN, hasN := m[outputApprovalsRequired]
		if !hasReq && !hasN {
			continue
		}
		asked := false
		if hasReq {
			b, ok := rawReq.(bool)
			if !ok {
				need.Required = true
				need.Approvals = max(need.Approvals, 1)
				need.Why = append(need.Why, fmt.Sprintf("policy output %s has a non-boolean %s (%v); treated as requiring approval", o.Source, outputRequireApproval, rawReq))
				continue
			}
			asked = b
		}
		if hasN {
			n, ok := approvalCount(rawN)
			if !ok {
				need.Required = true
				need.Approvals = max(need.Approvals, 1)
				need.Why = append(need.Why, fmt.Sprintf("policy output %s has an invalid %s (%v), want an integer 1..%d; treated as requiring approval", o.Source, outputApprovalsRequired, rawN, maxApprovalsRequired))
				continue
			}
			asked = true
			need.Approvals = max(need.Approvals, n)
		}
		if !asked {
			continue
		}
		need.Required = true
		need.Approvals = max(need.Approvals, 1)
		if why, ok := m[outputWhy].(string); ok && why != "" {
			need.Why = append(need.Why, why)
		}
	}
	return need
}

func approvalCount(v any) (int, bool) {
	f, ok := v.(float64)
	if !ok || math.IsNaN(f) || f != math.Trunc(f) || f < 1 || f > maxApprovalsRequired {
		return 0, false
	}
	return int(f), true
}

// String renders d for logs and test failures.
func (d Decision) String() string {
	var b strings.Builder
	verdict := "deny"
	if d.Allowed {
		verdict = "allow"
	}
	fmt.Fprintf(&b, "%s %s", d.Action, verdict)
	if d.Unavailable {
		b.WriteString(" (pdp unavailable)")
	}
	if d.Policy != "" {
		fmt.Fprintf(&b, " by %s", d.Policy)
	}
	if len(d.Reasons) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(d.Reasons, "; "))
	}
	return b.String()
}

// denyAll builds fail-closed decisions for every action with one reason.
func denyAll(actions []string, unavailable bool, reason string) map[string]Decision {
	out := make(map[string]Decision, len(actions))
	for _, a := range actions {
		out[a] = Decision{Action: a, Reasons: []string{reason}, Unavailable: unavailable}
	}
	return out
}

// uniqueActions drops duplicates and empty names, keeping first-seen order,
// and reports the empty names it dropped.
func uniqueActions(actions []string) (uniq []string, hadEmpty bool) {
	seen := make(map[string]struct{}, len(actions))
	uniq = make([]string, 0, len(actions))
	for _, a := range actions {
		if a == "" {
			hadEmpty = true
			continue
		}
		if _, dup := seen[a]; dup {
			continue
		}
		seen[a] = struct{}{}
		uniq = append(uniq, a)
	}
	return uniq, hadEmpty
}

func sortedRoles(roles []string) string {
	r := append([]string(nil), roles...)
	sort.Strings(r)
	return strings.Join(r, ", ")
}
