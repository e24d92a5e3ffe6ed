package server

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/tools"
)

// policiesText is tollgate://policies: the rules an agent is subject to, in
// words. It combines what tollgate always enforces, the guardrail constants
// of the policy folder the managed PDP serves (read at each call, so an
// edited policy shows at once), the configured approval rules, and the
// agent's budgets, limits and freezes (from spend_status). The policy engine
// has the last word on any call; estimate_cost asks it.
func policiesText(pr Principal, cfg Config, policyDir string, st tools.SpendStatusResult) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	roles := strings.Join(pr.Roles, ", ")
	if roles == "" {
		roles = "none"
	}
	line("# The rules you are subject to")
	line("")
	line("You are agent %s of team %s (roles: %s). Every tool call is checked by the policy engine; "+
		"estimate_cost tells you, without side effects, what it would decide for a concrete call.", pr.Name, orNone(pr.Team), roles)
	line("")
	line("## Always, whatever the policy says")
	line("")
	line("- register_domain and production deploy_worker cannot be undone: each waits for a human approver, who sees the exact arguments, the price and your reason.")
	line("- An approval covers exactly the arguments and the amount it was given for, once. A price that rose above it aborts the purchase.")
	line("- The human who owns you (%s) can never approve your requests.", orNone(pr.Owner))
	line("- Every budget that applies must have room for a call before anything happens; the amount is held until the call settles.")
	line("- A frozen agent, team or server has every spending call refused; read-only tools keep working.")
	line("")
	line("## The policy's guardrails")
	line("")
	consts, err := guardrails(policyDir)
	switch {
	case policyDir == "":
		line("The policies are served by an external policy engine (%s); tollgate cannot read them. Ask estimate_cost before a call.", orNone(cfg.Cerbos.Addr))
	case err != nil:
		line("The guardrails in %s could not be read (%v). Ask estimate_cost before a call.", policyDir, err)
	default:
		for _, l := range guardrailLines(consts, pr) {
			line("- %s", l)
		}
	}
	line("")
	line("## Approvals")
	line("")
	line("- A call that needs a human waits up to %s for a decision, then returns awaiting_approval; the request expires after %s (an expiry is not a denial).", cfg.Approvals.Wait, cfg.Approvals.Expiry)
	for _, q := range cfg.Approvals.Quorum {
		line("- Above %s %s: %d distinct approvers.", q.Above, orUSD(q.Currency), q.Approvers)
	}
	line("")
	line("## Your budgets, limits and freezes")
	line("")
	if len(st.Budgets) == 0 {
		line("- No budget applies to you.")
	}
	for _, bv := range st.Budgets {
		line("- Budget %s (%s): %s, %s spent, %s held, %s left.", bv.Scope, bv.Window, bv.Limit.Display, bv.Spent.Display, bv.Held.Display, bv.Remaining.Display)
	}
	for _, l := range st.Limits {
		line("- At most %d %s per %s for %s (%d used).", l.Max, l.Action, l.Window, l.Scope, l.Used)
	}
	if cfg.AutoFreeze.Blocks > 0 {
		line("- %d budget blocks within %s freeze you until a human unfreezes you.", cfg.AutoFreeze.Blocks, cfg.AutoFreeze.Within)
	}
	if cfg.QuotesPerMinute > 0 {
		line("- At most %d registrar price checks a minute.", cfg.QuotesPerMinute)
	}
	if len(st.Frozen) == 0 {
		line("- Nothing is frozen for you.")
	}
	for _, f := range st.Frozen {
		line("- FROZEN: %s, by %s: %s.", f.Scope, f.By, f.Reason)
	}
	return b.String()
}

// guardrails reads the exported constants of every file in
// policyDir/export_constants.
func guardrails(policyDir string) (map[string]any, error) {
	files, err := filepath.Glob(filepath.Join(policyDir, "export_constants", "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no export_constants")
	}
	out := map[string]any{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var doc struct {
			ExportConstants struct {
				Definitions map[string]any `yaml:"definitions"`
			} `yaml:"exportConstants"`
		}
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(f), err)
		}
		for k, v := range doc.ExportConstants.Definitions {
			out[k] = v
		}
	}
	return out, nil
}

// guardrailLines says the default policies' constants in words; constants
// it does not know are listed as they are.
func guardrailLines(c map[string]any, pr Principal) []string {
	currency, _ := c["currency"].(string)
	if currency == "" {
		currency = "USD"
	}
	amount := func(key string) (string, bool) {
		n, ok := c[key].(int)
		if !ok {
			return "", false
		}
		return money.Money{Micros: int64(n), Currency: currency}.String(), true
	}
	var out []string
	said := map[string]bool{}
	say := func(keys []string, text string) {
		out = append(out, text)
		for _, k := range keys {
			said[k] = true
		}
	}
	if tlds, ok := c["registrable_tlds"].([]any); ok {
		say([]string{"registrable_tlds"}, "Domains may be registered only under: "+joinAny(tlds, "."))
	}
	if names, ok := c["allowed_domains"].([]any); ok {
		if len(names) == 0 {
			say([]string{"allowed_domains"}, "Any name under those extensions may be asked for (no exact-name allowlist).")
		} else {
			say([]string{"allowed_domains"}, "Only these exact names may be registered: "+joinAny(names, ""))
		}
	}
	if v, ok := amount("max_registration_price_micros"); ok {
		say([]string{"max_registration_price_micros", "currency"}, fmt.Sprintf("A registration may cost at most %s in total (quotes in another currency are refused); premium names are refused.", v))
	}
	if v, ok := amount("quorum_price_micros"); ok {
		say([]string{"quorum_price_micros"}, fmt.Sprintf("A registration above %s needs two distinct approvers (against a real Cloudflare account; on the built-in sandbox nothing is billed and one suffices).", v))
	}
	if n, ok := c["max_registration_years_agent"].(int); ok {
		say([]string{"max_registration_years_agent"}, fmt.Sprintf("At most %d years per registration.", n))
	}
	if pr.Team != "" {
		out = append(out, fmt.Sprintf("Worker names must start with your team: %s-….", pr.Team))
	}
	if slices.Contains(pr.Roles, "deployer") {
		out = append(out, "You have the deployer role: you may ask for production deploys (each still waits for a human).")
	} else {
		out = append(out, "You do not have the deployer role: production deploys are refused; preview deploys are allowed.")
	}
	if n, ok := c["max_worker_module_bytes"].(int); ok {
		say([]string{"max_worker_module_bytes"}, fmt.Sprintf("A Worker module may be at most %d bytes (%.1f MiB).", n, float64(n)/(1<<20)))
	}
	if n, ok := c["max_first_rollout_percent"].(int); ok {
		say([]string{"max_first_rollout_percent"}, fmt.Sprintf("A production rollout's first step puts at most %d%% of the traffic on the new version.", n))
	}
	if n, ok := c["preview_approval_bytes"].(int); ok {
		say([]string{"preview_approval_bytes"}, fmt.Sprintf("A preview deploy larger than %d bytes also waits for a human.", n))
	}
	if v, ok := amount("approver_limit_micros"); ok {
		say([]string{"approver_limit_micros"}, fmt.Sprintf("Approvers may approve up to %s; above it a finance approver must decide.", v))
	}
	var rest []string
	for k, v := range c {
		if !said[k] {
			rest = append(rest, fmt.Sprintf("%s = %v", k, v))
		}
	}
	slices.Sort(rest)
	if len(rest) > 0 {
		out = append(out, "Other policy constants: "+strings.Join(rest, "; ")+".")
	}
	return out
}

func joinAny(vs []any, prefix string) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = prefix + fmt.Sprint(v)
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
