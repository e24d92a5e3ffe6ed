package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/server"
)

// cliApprovals builds the approvals service for a CLI command, with Cerbos
// deciding who may approve (the managed PDP is started for the command when
// no external one is configured). A running server sees the decision within
// a second and executes the operation.
func cliApprovals(ctx context.Context, cfg server.Config, db *ledger.DB) (*approvals.Service, func(), error) {
	// Who may vote is what the serving tollgate was configured with, not
	// whatever tollgate.yaml this command happens to find.
	stored, err := approvals.StoredApprovers(ctx, db.Store())
	if err != nil {
		return nil, nil, err
	}
	if len(stored) > 0 {
		cfg.Approvers = nil
		for _, a := range stored {
			cfg.Approvers = append(cfg.Approvers, server.ApproverConfig{Name: a.Name, SlackUserID: a.SlackUserID, OSUser: a.OSUser, Roles: a.Roles})
		}
	}
	log := slog.New(slog.DiscardHandler)
	rt := &runtime{}
	az, _, err := startPolicyEngine(ctx, cfg, log, rt)
	if err != nil {
		rt.close()
		return nil, nil, err
	}
	ap, err := server.NewApprovals(db, az, cfg, server.ApprovalHooks{Logger: log})
	if err != nil {
		rt.close()
		return nil, nil, err
	}
	return ap, rt.close, nil
}

func runApprovals(ctx context.Context, args []string, out io.Writer) error {
	return subcommand("approvals", args, map[string]func([]string) error{
		"list": func(args []string) error {
			fs := newFlagSet("approvals list", "list approval requests (pending by default)")
			cf := addConfigFlags(fs, dbSetting)
			state := fs.String("state", "pending", "pending, approved, denied, expired, cancelled or all")
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			return onLedger(ctx, cf, false, func(cfg server.Config, db *ledger.DB) error {
				ap, err := server.ApprovalsReader(db, cfg)
				if err != nil {
					return err
				}
				var states []string
				if *state != "all" {
					states = []string{*state}
				}
				reqs, err := ap.List(ctx, states...)
				if err != nil {
					return err
				}
				if *asJSON {
					if reqs == nil {
						reqs = []approvals.Request{}
					}
					return printJSON(out, reqs)
				}
				var t [][]string
				for _, r := range reqs {
					t = append(t, []string{r.ID, r.State, r.Agent, r.Summary, r.AmountText, fmt.Sprintf("%d/%d", r.Approvals(), max(r.Quorum, 1)), r.ExpiresAt.UTC().Format(time.RFC3339)})
				}
				return table(out, []string{"ID", "STATE", "AGENT", "SUMMARY", "AMOUNT", "VOTES", "EXPIRES"}, t)
			})
		},
		"show": func(args []string) error {
			fs := newFlagSet("approvals show ID", "show one approval request in full")
			cf := addConfigFlags(fs, dbSetting)
			asJSON := fs.Bool("json", false, "print as JSON")
			id, err := parseNamed(fs, args)
			if err != nil {
				return err
			}
			if id == "" {
				return usageError{"usage: tollgate approvals show ID"}
			}
			return onLedger(ctx, cf, false, func(cfg server.Config, db *ledger.DB) error {
				ap, err := server.ApprovalsReader(db, cfg)
				if err != nil {
					return err
				}
				r, err := ap.Get(ctx, id)
				if err != nil {
					return fmt.Errorf("approval %s: %w", id, err)
				}
				if *asJSON {
					return printJSON(out, r)
				}
				printRequest(out, r)
				return nil
			})
		},
		"approve": func(args []string) error { return vote(ctx, args, out, approvals.OutcomeApprove) },
		"deny":    func(args []string) error { return vote(ctx, args, out, approvals.OutcomeDeny) },
	}, []string{"list", "show", "approve", "deny"})
}

func vote(ctx context.Context, args []string, out io.Writer, outcome string) error {
	fs := newFlagSet("approvals "+outcome+" ID", outcome+" an approval request as the local approver")
	cf := addConfigFlags(fs, dbSetting, stringSetting("cerbos-addr", "TOLLGATE_CERBOS_ADDR", "external Cerbos PDP", func(c *server.Config) *string { return &c.Cerbos.Addr }),
		stringSetting("policies", "TOLLGATE_POLICIES", "policy folder for the managed PDP", func(c *server.Config) *string { return &c.Cerbos.Policies }))
	as := fs.String("as", "", "approver name (must be mapped to your OS user in approvers:)")
	reason := fs.String("reason", "", "why (required to deny)")
	id, err := parseNamed(fs, args)
	if err != nil {
		return err
	}
	if id == "" {
		return usageError{fmt.Sprintf("usage: tollgate approvals %s ID [--as NAME] [--reason TEXT]", outcome)}
	}
	if outcome == approvals.OutcomeDeny && strings.TrimSpace(*reason) == "" {
		return usageError{"--reason is required to deny"}
	}
	return onLedger(ctx, cf, false, func(cfg server.Config, db *ledger.DB) error {
		ap, closeAP, err := cliApprovals(ctx, cfg, db)
		if err != nil {
			return err
		}
		defer closeAP()

		user := osUser()
		me, ok := ap.ApproverForOSUser(user)
		if *as != "" {
			a, found := ap.ApproverByName(*as)
			if !found {
				return fmt.Errorf("%q is not a configured approver", *as)
			}
			if a.OSUser != user && !(a.OSUser == "" && a.Name == user) {
				return fmt.Errorf("approver %q is mapped to OS user %q, and you are %q", a.Name, a.OSUser, user)
			}
			me, ok = a, true
		}
		if !ok {
			return fmt.Errorf("OS user %q is not mapped to an approver (add os_user: %s to an entry under approvers: in tollgate.yaml)", user, user)
		}
		res, err := ap.Decide(ctx, approvals.VoteInput{RequestID: id, Approver: me.Name, Via: approvals.ViaCLI, Outcome: outcome, Reason: *reason})
		if err != nil {
			var na *approvals.NotAllowedError
			switch {
			case errors.As(err, &na):
				return fmt.Errorf("not allowed: %s", na.Reason)
			case errors.Is(err, approvals.ErrExpired):
				return fmt.Errorf("%s has expired; nothing was decided", id)
			}
			return err
		}
		if !res.Final {
			fmt.Fprintf(out, "%s: your approval is recorded (%d of %d); waiting for more approvers\n", id, res.Approvals, res.Needed)
			return nil
		}
		fmt.Fprintf(out, "%s %s by %s; a running tollgate server acts on it within a second\n", id, res.Request.State, me.Name)
		return nil
	})
}

// printRequest prints one request for a terminal. Everything in it that an
// agent, its client or a voter wrote is sanitised to one line (display.Text).
func printRequest(out io.Writer, r approvals.Request) {
	t := func(s string) string { return display.Text(s, 1000) }
	fmt.Fprintf(out, "%s  %s  (%s)\n", t(r.ID), t(r.Summary), t(r.State))
	fmt.Fprintf(out, "  operation   %s\n  agent       %s (team %s, owner %s) via %s\n", t(r.OperationID), t(r.Agent), t(r.Team), t(r.Owner), t(r.Client))
	fmt.Fprintf(out, "  amount      %s\n  expires     %s\n  quorum      %d of %d\n", t(r.AmountText), r.ExpiresAt.UTC().Format(time.RFC3339), r.Approvals(), max(r.Quorum, 1))
	fmt.Fprintf(out, "  reason      %s\n  policy      %s\n", t(r.Reason), t(r.Policy))
	for _, f := range r.Args {
		fmt.Fprintf(out, "  %-11s %s\n", strings.ToLower(t(f.Label)), t(f.Value))
	}
	if r.Module != nil {
		fmt.Fprintf(out, "  module      %s, %d bytes, sha256 %s\n", t(r.Module.Name), r.Module.Size, t(r.Module.SHA256))
		for _, l := range strings.Split(r.Module.FirstLines, "\n") {
			fmt.Fprintf(out, "    | %s\n", display.Text(l, 200))
		}
	}
	for _, h := range r.Headroom {
		fmt.Fprintf(out, "  budget      %s\n", t(h))
	}
	for _, v := range r.Votes {
		fmt.Fprintf(out, "  vote        %s %s via %s at %s %s\n", t(v.Approver), t(v.Outcome), t(v.Via), v.At.UTC().Format(time.RFC3339), t(v.Reason))
	}
	if r.ResultText != "" {
		fmt.Fprintf(out, "  result      %s\n", t(r.ResultText))
	}
}
