package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/server"
	"github.com/tollgatehq/tollgate/tools"
)

// runMandates is `tollgate mandates create|list|revoke`: standing approvals
// an approver gives from the CLI.
func runMandates(ctx context.Context, args []string, out io.Writer) error {
	return subcommand("mandates", args, map[string]func([]string) error{
		"create": func(args []string) error { return createMandate(ctx, args, out) },
		"list": func(args []string) error {
			fs := newFlagSet("mandates list", "list standing approvals (mandates), newest first")
			cf := addConfigFlags(fs, ledgerSettings...)
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			return onLedger(ctx, cf, reads, func(_ server.Config, db *ledger.DB) error {
				ms, err := db.Mandates(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					if ms == nil {
						ms = []ledger.Mandate{}
					}
					return printJSON(out, ms)
				}
				if len(ms) == 0 {
					fmt.Fprintln(out, "No mandates.")
					return nil
				}
				now := time.Now()
				for _, m := range ms {
					fmt.Fprintln(out, server.MandateSentence(m, now))
				}
				return nil
			})
		},
		"revoke": func(args []string) error {
			fs := newFlagSet("mandates revoke ID", "end a mandate at once")
			cf := addConfigFlags(fs, ledgerSettings...)
			id, err := parseNamed(fs, args)
			if err != nil {
				return err
			}
			if id == "" {
				return usageError{"usage: tollgate mandates revoke man_…"}
			}
			return onLedger(ctx, cf, appends, func(_ server.Config, db *ledger.DB) error {
				m, err := db.RevokeMandate(ctx, id, cliActor())
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "Revoked %s: %s\n", m.ID, server.MandateSentence(m, time.Now()))
				return nil
			})
		},
	}, []string{"create", "list", "revoke"})
}

func createMandate(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("mandates create", "give an agent a standing approval (a mandate) as the local approver")
	cf := addConfigFlags(fs, slices.Concat(ledgerSettings, []setting{
		stringSetting("cerbos-addr", "TOLLGATE_CERBOS_ADDR", "external Cerbos PDP", func(c *server.Config) *string { return &c.Cerbos.Addr }),
		stringSetting("policies", "TOLLGATE_POLICIES", "policy folder for the managed PDP", func(c *server.Config) *string { return &c.Cerbos.Policies }),
	})...)
	agent := fs.String("agent", "", "the agent it is for (required)")
	action := fs.String("action", "", "the tool it covers: "+tools.OrList(tools.RateLimited())+" (required)")
	resource := fs.String("resource", "", `resource pattern: an exact name, "*.dev" or "shop-*" (required)`)
	perCall := fs.String("max-per-call", "", "most one call may cost, e.g. 15.00 (required)")
	total := fs.String("max-total", "", "most all calls together may cost (required)")
	currency := fs.String("currency", "USD", "currency of the amounts")
	count := fs.Int("count", 0, fmt.Sprintf("how many calls it covers, 1 to %d (required)", ledger.MaxMandateCount))
	expires := fs.Duration("expires", 24*time.Hour, "how long it lasts, at most 168h")
	as := fs.String("as", "", "approver name (must be mapped to your OS user in approvers:)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var problems []string
	for name, v := range map[string]string{"--agent": *agent, "--action": *action, "--resource": *resource, "--max-per-call": *perCall, "--max-total": *total} {
		if strings.TrimSpace(v) == "" {
			problems = append(problems, name+" is required")
		}
	}
	if *action != "" && !tools.IsRateLimited(*action) {
		problems = append(problems, fmt.Sprintf("--action %q: use %s", display.Text(*action, 40), tools.OrList(tools.RateLimited())))
	}
	maxPerCall, err := money.ParseMoney(*perCall, strings.ToUpper(*currency))
	if *perCall != "" && err != nil {
		problems = append(problems, "--max-per-call: "+err.Error())
	}
	maxTotal, err := money.ParseMoney(*total, strings.ToUpper(*currency))
	if *total != "" && err != nil {
		problems = append(problems, "--max-total: "+err.Error())
	}
	if *expires <= 0 || *expires > ledger.MaxMandateLifetime {
		problems = append(problems, fmt.Sprintf("--expires %s: use 1s to 168h", *expires))
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return usageError{strings.Join(problems, "; ")}
	}
	return onLedger(ctx, cf, appends, func(cfg server.Config, db *ledger.DB) error {
		cfg, err := servedApprovers(ctx, cfg, db)
		if err != nil {
			return err
		}
		ap, err := server.ApprovalsReader(db, cfg)
		if err != nil {
			return err
		}
		me, err := localApprover(ap, *as)
		if err != nil {
			return err
		}
		rt := &runtime{}
		defer rt.close()
		az, _, err := startPolicyEngine(ctx, cfg, slog.New(slog.DiscardHandler), rt)
		if err != nil {
			return err
		}
		// The only environment a mandate of the tool may cover (preview
		// deploys); the policy says so again at each use.
		env := ""
		if t, ok := tools.Find(*action); ok {
			env = t.Approval.MandateEnvironment
		}
		m, err := server.MandateCreator{DB: db, Authz: az, Cfg: cfg}.CreateMandate(ctx, server.MandateInput{
			Approver: me, Via: approvals.ViaCLI, Agent: *agent, Action: *action, Environment: env, Pattern: *resource,
			MaxPerCall: maxPerCall, MaxTotal: maxTotal, Count: *count, Lifetime: *expires,
		})
		var mr *approvals.MandateRefusedError
		if errors.As(err, &mr) {
			return errors.New(mr.Reason)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "Created %s\n", server.MandateSentence(m, time.Now()))
		fmt.Fprintf(out, "Revoke it at once with: tollgate mandates revoke %s\n", m.ID)
		return nil
	})
}
