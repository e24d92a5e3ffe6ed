package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/server"
	"github.com/tollgatehq/tollgate/tools"
)

// subcommand dispatches "tollgate <group> <verb>".
func subcommand(group string, args []string, verbs map[string]func([]string) error, order []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(os.Stderr, "Usage: tollgate %s <%s> [flags]\n", group, strings.Join(order, "|"))
		if len(args) == 0 {
			return usageError{"missing subcommand"}
		}
		return nil
	}
	fn, ok := verbs[args[0]]
	if !ok {
		return usageError{fmt.Sprintf("unknown %s subcommand %q (use %s)", group, args[0], strings.Join(order, ", "))}
	}
	return fn(args[1:])
}

// ---- sandbox

func runSandbox(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("sandbox", "run the Cloudflare API emulator alone")
	listen := fs.String("listen", "127.0.0.1:8788", "listen address (loopback only; port 0 picks one)")
	state := fs.String("state", "", "persist state in this JSON file (default: memory only)")
	faults := sandboxFaultFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("sandbox takes no arguments, got %q", fs.Args())}
	}
	f, err := faults()
	if err != nil {
		return usageError{err.Error()}
	}
	// The fault admin endpoint is always on here: the sandbox binds loopback
	// only, and tests in other processes need to change faults mid-run.
	sb, err := sandbox.New(sandbox.Options{StateFile: *state, Faults: f, Admin: true})
	if err != nil {
		return err
	}
	addr, err := sandbox.Serve(ctx, *listen, sb)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Cloudflare API sandbox on http://%s/client/v4/\n", addr)
	fmt.Fprintf(out, "  account id    %s\n", sb.AccountID())
	fmt.Fprintf(out, "  parent token  %s   (may only create, list and delete account tokens)\n", sb.ParentToken())
	fmt.Fprintf(out, "  faults        http://%s%s   (GET to read, POST JSON to replace, {} to clear; loopback only)\n", addr, sandbox.AdminFaultsPath)
	if f != (sandbox.Faults{}) {
		b, _ := json.Marshal(f.JSON())
		fmt.Fprintf(out, "  active faults %s\n", b)
	}
	fmt.Fprintf(out, "\nTry:\n  curl -s -H \"Authorization: Bearer %s\" http://%s/client/v4/accounts/%s/tokens/permission_groups\n", sb.ParentToken(), addr, sb.AccountID())
	<-ctx.Done()
	return nil
}

// sandboxFaultFlags registers the initial-fault flags of `tollgate sandbox`
// and returns a func that builds (and validates) the faults they describe.
func sandboxFaultFlags(fs *flag.FlagSet) func() (sandbox.Faults, error) {
	latency := fs.Duration("latency", 0, "add this latency to matching requests")
	errorRate := fs.Float64("error-rate", 0, "answer this fraction (0..1) of matching requests 500")
	rateLimit := fs.Float64("rate-limit-rate", 0, "answer this fraction (0..1) of matching requests 429")
	hang := fs.Bool("hang", false, "hold matching requests without answering until the client gives up")
	path := fs.String("fault-path", "", "limit faults to request paths containing this")
	method := fs.String("fault-method", "", "limit faults to this HTTP method")
	hangPath := fs.String("hang-path", "", "shorthand for --hang --fault-path PATH")
	hangMethod := fs.String("hang-method", "", "shorthand for --hang --fault-method METHOD")
	afterEffect := fs.Bool("fail-after-effect", false, "make the change before answering 500 or hanging")
	return func() (sandbox.Faults, error) {
		f := sandbox.Faults{
			Latency: *latency, ErrorRate: *errorRate, RateLimitRate: *rateLimit, Hang: *hang,
			PathContains: *path, Method: strings.ToUpper(*method), FailAfterEffect: *afterEffect,
		}
		if *hangPath != "" {
			if *path != "" && *path != *hangPath {
				return f, fmt.Errorf("--hang-path %q and --fault-path %q disagree; the faults take one path filter", *hangPath, *path)
			}
			f.Hang, f.PathContains = true, *hangPath
		}
		if *hangMethod != "" {
			if *method != "" && !strings.EqualFold(*method, *hangMethod) {
				return f, fmt.Errorf("--hang-method %q and --fault-method %q disagree; the faults take one method filter", *hangMethod, *method)
			}
			f.Hang, f.Method = true, strings.ToUpper(*hangMethod)
		}
		// The admin endpoint's parser validates exactly as a POST would.
		b, err := json.Marshal(f.JSON())
		if err != nil {
			return f, err
		}
		if _, err := sandbox.ParseFaults(b); err != nil {
			return f, err
		}
		return f, nil
	}
}

// ---- budget and limit

func runBudget(ctx context.Context, args []string, out io.Writer) error {
	return subcommand("budget", args, map[string]func([]string) error{
		"set": func(args []string) error {
			fs := newFlagSet("budget set", "set a budget (spent+held may never exceed it)")
			cf := addConfigFlags(fs, ledgerSettings...)
			scope := fs.String("scope", "", "agent:NAME, team:NAME or global")
			window := fs.String("window", "", "day, month (calendar, UTC) or total")
			limit := fs.String("limit", "", "amount as a decimal, e.g. 25.00")
			currency := fs.String("currency", "USD", "ISO 4217 currency")
			if err := fs.Parse(args); err != nil {
				return err
			}
			b, err := server.BudgetConfig{Scope: *scope, Window: *window, Limit: *limit, Currency: *currency}.Budget()
			if err != nil {
				return usageError{err.Error()}
			}
			return onLedger(ctx, cf, creates, func(_ server.Config, db *ledger.DB) error {
				if err := db.SetBudget(ctx, b, cliActor()); err != nil {
					return err
				}
				fmt.Fprintf(out, "budget %s %s set to %s\n", b.Scope, b.Window, b.Limit)
				return nil
			})
		},
		"list": func(args []string) error {
			fs := newFlagSet("budget list", "list budgets with their current spend")
			cf := addConfigFlags(fs, ledgerSettings...)
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			return onLedger(ctx, cf, reads, func(_ server.Config, db *ledger.DB) error {
				sts, err := db.BudgetStatuses(ctx) // every budget
				if err != nil {
					return err
				}
				return printBudgets(out, sts, *asJSON)
			})
		},
		"show": func(args []string) error {
			fs := newFlagSet("budget show", "show one scope's budgets: spent, held, remaining, resets at")
			cf := addConfigFlags(fs, ledgerSettings...)
			scope := fs.String("scope", "", "agent:NAME, team:NAME or global")
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			sc, err := ledger.ParseScope(*scope)
			if err != nil {
				return usageError{err.Error()}
			}
			return onLedger(ctx, cf, reads, func(_ server.Config, db *ledger.DB) error {
				sts, err := db.BudgetStatuses(ctx, sc)
				if err != nil {
					return err
				}
				if len(sts) == 0 && !*asJSON {
					fmt.Fprintf(out, "no budgets for %s\n", sc)
					return nil
				}
				return printBudgets(out, sts, *asJSON)
			})
		},
		"delete": func(args []string) error {
			fs := newFlagSet("budget delete", "delete a budget")
			cf := addConfigFlags(fs, ledgerSettings...)
			scope := fs.String("scope", "", "agent:NAME, team:NAME or global")
			window := fs.String("window", "", "day, month or total")
			if err := fs.Parse(args); err != nil {
				return err
			}
			sc, err := ledger.ParseScope(*scope)
			if err != nil {
				return usageError{err.Error()}
			}
			w, err := ledger.ParseWindow(*window)
			if err != nil {
				return usageError{err.Error()}
			}
			return onLedger(ctx, cf, creates, func(_ server.Config, db *ledger.DB) error {
				return db.DeleteBudget(ctx, sc, w, cliActor())
			})
		},
	}, []string{"set", "list", "show", "delete"})
}

type budgetJSON struct {
	Scope     string     `json:"scope"`
	Window    string     `json:"window"`
	Period    string     `json:"period"`
	Currency  string     `json:"currency"`
	Limit     string     `json:"limit"`
	Spent     string     `json:"spent"`
	Held      string     `json:"held"`
	Remaining string     `json:"remaining"`
	ResetsAt  *time.Time `json:"resets_at,omitempty"`
}

func printBudgets(out io.Writer, sts []ledger.BudgetStatus, asJSON bool) error {
	rows := make([]budgetJSON, 0, len(sts))
	for _, s := range sts {
		rows = append(rows, budgetJSON{
			Scope: string(s.Budget.Scope), Window: string(s.Budget.Window), Period: s.Period, Currency: s.Budget.Limit.Currency,
			Limit: s.Budget.Limit.Decimal(), Spent: s.Spent.Decimal(), Held: s.Held.Decimal(), Remaining: s.Remaining.Decimal(), ResetsAt: s.ResetsAt,
		})
	}
	if asJSON {
		return printJSON(out, rows)
	}
	var t [][]string
	for _, r := range rows {
		t = append(t, []string{r.Scope, r.Window, r.Limit + " " + r.Currency, r.Spent, r.Held, r.Remaining, fmtTime(r.ResetsAt)})
	}
	return table(out, []string{"SCOPE", "WINDOW", "LIMIT", "SPENT", "HELD", "REMAINING", "RESETS AT"}, t)
}

func runLimit(ctx context.Context, args []string, out io.Writer) error {
	return subcommand("limit", args, map[string]func([]string) error{
		"set": func(args []string) error {
			fs := newFlagSet("limit set", "set a velocity limit: at most N calls of an action per scope per window")
			cf := addConfigFlags(fs, ledgerSettings...)
			scope := fs.String("scope", "", "agent:NAME, team:NAME or global")
			action := fs.String("action", "", tools.OrList(tools.RateLimited()))
			window := fs.String("window", "", "day or month")
			maxN := fs.Int("max", -1, "maximum count per window")
			if err := fs.Parse(args); err != nil {
				return err
			}
			l, err := server.LimitConfig{Scope: *scope, Action: *action, Window: *window, Max: *maxN}.VelocityLimit()
			if err != nil {
				return usageError{err.Error()}
			}
			return onLedger(ctx, cf, creates, func(_ server.Config, db *ledger.DB) error {
				if err := db.SetLimit(ctx, l, cliActor()); err != nil {
					return err
				}
				fmt.Fprintf(out, "limit %s %s per %s set to %d\n", l.Scope, l.Action, l.Window, l.Max)
				return nil
			})
		},
		"list": func(args []string) error {
			fs := newFlagSet("limit list", "list velocity limits")
			cf := addConfigFlags(fs, ledgerSettings...)
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			return onLedger(ctx, cf, reads, func(_ server.Config, db *ledger.DB) error {
				ls, err := db.Limits(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					if ls == nil {
						ls = []ledger.VelocityLimit{}
					}
					return printJSON(out, ls)
				}
				var t [][]string
				for _, l := range ls {
					t = append(t, []string{string(l.Scope), l.Action, string(l.Window), strconv.Itoa(l.Max)})
				}
				return table(out, []string{"SCOPE", "ACTION", "WINDOW", "MAX"}, t)
			})
		},
		"delete": func(args []string) error {
			fs := newFlagSet("limit delete", "delete a velocity limit")
			cf := addConfigFlags(fs, ledgerSettings...)
			scope := fs.String("scope", "", "agent:NAME, team:NAME or global")
			action := fs.String("action", "", tools.OrList(tools.RateLimited()))
			window := fs.String("window", "", "day or month")
			if err := fs.Parse(args); err != nil {
				return err
			}
			l, err := server.LimitConfig{Scope: *scope, Action: *action, Window: *window}.VelocityLimit()
			if err != nil {
				return usageError{err.Error()}
			}
			return onLedger(ctx, cf, creates, func(_ server.Config, db *ledger.DB) error {
				return db.DeleteLimit(ctx, l.Scope, l.Action, l.Window, cliActor())
			})
		},
	}, []string{"set", "list", "delete"})
}

// ---- freeze

func runFreeze(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "list" {
		return listFreezes(ctx, args[1:], out)
	}
	fs := newFlagSet("freeze", "deny every mutating call of an agent, a team or everyone, cancel their pending approvals and release their holds")
	cf := addConfigFlags(fs, ledgerSettings...)
	agent := fs.String("agent", "", "freeze this agent")
	team := fs.String("team", "", "freeze this team")
	all := fs.Bool("all", false, "freeze everything")
	reason := fs.String("reason", "", "why (required; shown to agents and in the audit trail)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	scope, err := freezeScope(*agent, *team, *all)
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return usageError{"--reason is required"}
	}
	return onLedger(ctx, cf, creates, func(cfg server.Config, db *ledger.DB) error {
		// The kill switch must work when the policy engine does not: cancelling
		// pending approvals needs no policy decision.
		ap, err := server.ApprovalsReader(db, cfg)
		if err != nil {
			return err
		}
		cancelled, err := server.Freeze(ctx, db, ap, scope, *reason, cliActor())
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s frozen; %d pending operation(s) cancelled and their holds released\n", scope, len(cancelled))
		for _, id := range cancelled {
			fmt.Fprintln(out, "  cancelled", id)
		}
		return nil
	})
}

func listFreezes(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("freeze list", "list active freezes")
	cf := addConfigFlags(fs, ledgerSettings...)
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return onLedger(ctx, cf, reads, func(_ server.Config, db *ledger.DB) error {
		fz, err := db.Freezes(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if fz == nil {
				fz = []ledger.Freeze{}
			}
			return printJSON(out, fz)
		}
		var t [][]string
		for _, f := range fz {
			t = append(t, []string{string(f.Scope), f.By, fmtTime(&f.At), strconv.FormatBool(f.Auto), f.Reason})
		}
		return table(out, []string{"SCOPE", "BY", "AT", "AUTO", "REASON"}, t)
	})
}

func runUnfreeze(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("unfreeze", "lift a freeze")
	cf := addConfigFlags(fs, ledgerSettings...)
	agent := fs.String("agent", "", "unfreeze this agent")
	team := fs.String("team", "", "unfreeze this team")
	all := fs.Bool("all", false, "lift the global freeze")
	if err := fs.Parse(args); err != nil {
		return err
	}
	scope, err := freezeScope(*agent, *team, *all)
	if err != nil {
		return err
	}
	return onLedger(ctx, cf, creates, func(_ server.Config, db *ledger.DB) error {
		if err := db.Unfreeze(ctx, scope, cliActor()); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s unfrozen\n", scope)
		return nil
	})
}

func freezeScope(agent, team string, all bool) (ledger.Scope, error) {
	n := 0
	for _, set := range []bool{agent != "", team != "", all} {
		if set {
			n++
		}
	}
	if n != 1 {
		return "", usageError{"give exactly one of --agent NAME, --team NAME or --all"}
	}
	switch {
	case agent != "":
		return ledger.AgentScope(agent), nil
	case team != "":
		return ledger.TeamScope(team), nil
	}
	return ledger.GlobalScope, nil
}

// ---- agents

func runAgents(ctx context.Context, args []string, out io.Writer) error {
	return subcommand("agents", args, map[string]func([]string) error{
		"create": func(args []string) error {
			fs := newFlagSet("agents create NAME", "create an agent and print its bearer token once")
			cf := addConfigFlags(fs, ledgerSettings...)
			roles := fs.String("roles", "agent", "comma-separated Cerbos roles")
			team := fs.String("team", "", "team (required)")
			owner := fs.String("owner", "", "the human accountable for the agent (an approver name); never approves its requests")
			ttl := fs.Duration("ttl", 24*time.Hour, "token lifetime")
			attrs := fs.String("attr", "", "extra principal attributes, k=v,k=v (e.g. environment=prod,trust_tier=high)")
			name, err := parseNamed(fs, args)
			if err != nil {
				return err
			}
			if name == "" || *team == "" {
				return usageError{"usage: tollgate agents create NAME --team TEAM [--roles agent,deployer] [--ttl 24h]"}
			}
			attributes, err := parseAttrs(*attrs)
			if err != nil {
				return usageError{err.Error()}
			}
			return onLedger(ctx, cf, creates, func(_ server.Config, db *ledger.DB) error {
				tok, err := db.CreateAgent(ctx, ledger.Agent{Name: name, Team: *team, Owner: *owner, Roles: splitList(*roles), Attributes: attributes}, *ttl, cliActor())
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "agent %s created (team %s, roles %s); its token, shown only now, expires in %s:\n", name, *team, *roles, *ttl)
				fmt.Fprintln(out, tok)
				return nil
			})
		},
		"list": func(args []string) error {
			fs := newFlagSet("agents list", "list agents and their tokens (never the secrets)")
			cf := addConfigFlags(fs, ledgerSettings...)
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			return onLedger(ctx, cf, reads, func(_ server.Config, db *ledger.DB) error {
				as, err := db.Agents(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					if as == nil {
						as = []ledger.AgentInfo{}
					}
					return printJSON(out, as)
				}
				var t [][]string
				for _, a := range as {
					for _, tk := range a.Tokens {
						state := "valid"
						switch {
						case tk.RevokedAt != nil:
							state = "revoked"
						case time.Now().After(tk.ExpiresAt):
							state = "expired"
						case tk.OverlapUntil != nil:
							state = "rotated, valid until " + fmtTime(tk.OverlapUntil)
						}
						t = append(t, []string{a.Agent.Name, a.Agent.Team, strings.Join(a.Agent.Roles, ","), tk.Prefix + "…", fmtTime(&tk.ExpiresAt), state})
					}
					if len(a.Tokens) == 0 {
						t = append(t, []string{a.Agent.Name, a.Agent.Team, strings.Join(a.Agent.Roles, ","), "-", "-", "no token"})
					}
				}
				return table(out, []string{"AGENT", "TEAM", "ROLES", "TOKEN", "EXPIRES", "STATE"}, t)
			})
		},
		"rotate": func(args []string) error {
			fs := newFlagSet("agents rotate NAME", "issue a new token; old ones stay valid for --overlap")
			cf := addConfigFlags(fs, ledgerSettings...)
			ttl := fs.Duration("ttl", 24*time.Hour, "new token lifetime")
			overlap := fs.Duration("overlap", 10*time.Minute, "how long the old tokens keep working")
			name, err := parseNamed(fs, args)
			if err != nil {
				return err
			}
			if name == "" {
				return usageError{"usage: tollgate agents rotate NAME [--ttl 24h] [--overlap 10m]"}
			}
			return onLedger(ctx, cf, creates, func(_ server.Config, db *ledger.DB) error {
				tok, err := db.RotateAgentToken(ctx, name, *ttl, *overlap, cliActor())
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "new token for %s (old tokens valid for %s more):\n", name, *overlap)
				fmt.Fprintln(out, tok)
				return nil
			})
		},
		"revoke": func(args []string) error {
			fs := newFlagSet("agents revoke NAME", "revoke every token of an agent at once")
			cf := addConfigFlags(fs, ledgerSettings...)
			name, err := parseNamed(fs, args)
			if err != nil {
				return err
			}
			if name == "" {
				return usageError{"usage: tollgate agents revoke NAME"}
			}
			return onLedger(ctx, cf, creates, func(_ server.Config, db *ledger.DB) error {
				if err := db.RevokeAgent(ctx, name, cliActor()); err != nil {
					return err
				}
				fmt.Fprintf(out, "every token of %s revoked\n", name)
				return nil
			})
		},
	}, []string{"create", "list", "rotate", "revoke"})
}

// parseNamed parses flags around one positional argument (an agent name, an
// approval or operation id), which may come before or after them.
func parseNamed(fs *flag.FlagSet, args []string) (string, error) {
	name := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	rest := fs.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return "", usageError{fmt.Sprintf("unexpected arguments %q", rest)}
	}
	return name, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseAttrs(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--attr %q: want key=value", kv)
		}
		if slices.Contains(server.ReservedAttributes, k) {
			return nil, fmt.Errorf("--attr %s: set by tollgate itself (use --team / --owner)", k)
		}
		out[k] = v
	}
	return out, nil
}
