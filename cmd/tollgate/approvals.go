package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/approvals/web"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/server"
)

// servedApprovers replaces cfg's approvers with the ones the serving tollgate
// published: who may vote, or sign in to the console, is what the server was
// configured with, not whatever tollgate.yaml this command happens to find.
func servedApprovers(ctx context.Context, cfg server.Config, db *ledger.DB) (server.Config, error) {
	stored, err := approvals.StoredApprovers(ctx, db.Store())
	if err != nil {
		return cfg, err
	}
	if len(stored) > 0 {
		cfg.Approvers = nil
		for _, a := range stored {
			cfg.Approvers = append(cfg.Approvers, server.ApproverConfig{Name: a.Name, SlackUserID: a.SlackUserID, OSUser: a.OSUser, Roles: a.Roles})
		}
	}
	return cfg, nil
}

// localApprover is the approver the OS user running the CLI is: by its
// os_user mapping, or --as NAME when that approver is mapped to this OS user.
func localApprover(ap *approvals.Service, as string) (approvals.Approver, error) {
	user := osUser()
	me, ok := ap.ApproverForOSUser(user)
	if as != "" {
		a, found := ap.ApproverByName(as)
		if !found {
			return approvals.Approver{}, fmt.Errorf("%q is not a configured approver", as)
		}
		if a.OSUser != user && !(a.OSUser == "" && a.Name == user) {
			return approvals.Approver{}, fmt.Errorf("approver %q is mapped to OS user %q, and you are %q", a.Name, a.OSUser, user)
		}
		me, ok = a, true
	}
	if !ok {
		return approvals.Approver{}, fmt.Errorf("OS user %q is not mapped to an approver (add os_user: %s to an entry under approvers: in tollgate.yaml)", user, user)
	}
	return me, nil
}

// cliApprovals builds the approvals service for a CLI command, with Cerbos
// deciding who may approve (the managed PDP is started for the command when
// no external one is configured). A running server sees the decision within
// a second and executes the operation.
func cliApprovals(ctx context.Context, cfg server.Config, db *ledger.DB) (*approvals.Service, func(), error) {
	cfg, err := servedApprovers(ctx, cfg, db)
	if err != nil {
		return nil, nil, err
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
			cf := addConfigFlags(fs, ledgerSettings...)
			state := fs.String("state", "pending", "pending, approved, denied, expired, cancelled or all")
			asJSON := fs.Bool("json", false, "print as JSON")
			if err := fs.Parse(args); err != nil {
				return err
			}
			return onLedger(ctx, cf, reads, func(cfg server.Config, db *ledger.DB) error {
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
				if len(reqs) == 0 {
					if *state == "all" {
						fmt.Fprintln(out, "No approval requests.")
					} else {
						fmt.Fprintf(out, "No %s approval requests.\n", display.Text(*state, 20))
					}
					return nil
				}
				now := time.Now()
				for _, r := range reqs {
					fmt.Fprintln(out, requestSentence(r, now))
				}
				return nil
			})
		},
		"show": func(args []string) error {
			fs := newFlagSet("approvals show ID", "show one approval request in full (ID: apr_…, 6+ of its first characters, or op_…)")
			cf := addConfigFlags(fs, ledgerSettings...)
			asJSON := fs.Bool("json", false, "print as JSON")
			id, err := parseNamed(fs, args)
			if err != nil {
				return err
			}
			if id == "" {
				return usageError{"usage: tollgate approvals show ID (apr_…, 6+ of its first characters, or op_…)"}
			}
			return onLedger(ctx, cf, reads, func(cfg server.Config, db *ledger.DB) error {
				ap, err := server.ApprovalsReader(db, cfg)
				if err != nil {
					return err
				}
				r, err := ap.Resolve(ctx, id)
				if err != nil {
					return refError(id, err)
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
		"open":    func(args []string) error { return openConsole(ctx, args, out) },
	}, []string{"list", "show", "approve", "deny", "open"})
}

func vote(ctx context.Context, args []string, out io.Writer, outcome string) error {
	fs := newFlagSet("approvals "+outcome+" ID", outcome+" an approval request as the local approver")
	cf := addConfigFlags(fs, slices.Concat(ledgerSettings, []setting{
		stringSetting("cerbos-addr", "TOLLGATE_CERBOS_ADDR", "external Cerbos PDP", func(c *server.Config) *string { return &c.Cerbos.Addr }),
		stringSetting("policies", "TOLLGATE_POLICIES", "policy folder for the managed PDP", func(c *server.Config) *string { return &c.Cerbos.Policies }),
	})...)
	as := fs.String("as", "", "approver name (must be mapped to your OS user in approvers:)")
	reason := fs.String("reason", "", "why (required to deny)")
	noWait := fs.Bool("no-wait", false, "return once the vote is recorded, without waiting for the outcome")
	wait := fs.Duration("wait", defaultVoteWait, "how long to wait for the outcome (the registration, the deploy, or the failure)")
	id, err := parseNamed(fs, args)
	if err != nil {
		return err
	}
	if id == "" {
		return usageError{fmt.Sprintf("usage: tollgate approvals %s ID [--as NAME] [--reason TEXT] [--no-wait] (ID: apr_…, 6+ of its first characters, or op_…)", outcome)}
	}
	if *wait <= 0 || *wait > time.Hour {
		return usageError{fmt.Sprintf("--wait %s: use 1s to 1h, or --no-wait", *wait)}
	}
	if outcome == approvals.OutcomeDeny && strings.TrimSpace(*reason) == "" {
		return usageError{"--reason is required to deny"}
	}
	return onLedger(ctx, cf, appends, func(cfg server.Config, db *ledger.DB) error {
		ap, closeAP, err := cliApprovals(ctx, cfg, db)
		if err != nil {
			return err
		}
		defer closeAP()

		me, err := localApprover(ap, *as)
		if err != nil {
			return err
		}
		r, err := ap.Resolve(ctx, id)
		if err != nil {
			return refError(id, err)
		}
		id = r.ID
		res, err := ap.Decide(ctx, approvals.VoteInput{RequestID: id, Approver: me.Name, Via: approvals.ViaCLI, Outcome: outcome, Reason: *reason})
		if err != nil {
			var na *approvals.NotAllowedError
			switch {
			case errors.As(err, &na):
				return fmt.Errorf("not allowed: %s", na.Reason)
			case errors.Is(err, approvals.ErrExpired):
				return fmt.Errorf("%s has expired; nothing was decided", id)
			case errors.Is(err, approvals.ErrWithdrawn):
				return fmt.Errorf("%s was withdrawn by the agent (%s); nothing was decided", id, display.Text(withdrawnWhy(ctx, ap, id), 300))
			case errors.Is(err, approvals.ErrCancelled):
				return fmt.Errorf("%s was cancelled (%s); nothing was decided", id, display.Text(withdrawnWhy(ctx, ap, id), 300))
			}
			return err
		}
		if !res.Final {
			fmt.Fprintf(out, "%s: your approval is recorded (%d of %d); waiting for more approvers\n", id, res.Approvals, res.Needed)
			return nil
		}
		fmt.Fprintf(out, "%s %s by %s: %s\n", id, res.Request.State, me.Name, display.Text(res.Request.Summary, 200))
		if *noWait {
			fmt.Fprintln(out, "A running tollgate server acts on it within a second; follow it with: tollgate approvals show "+approvals.ShortID(id))
			return nil
		}
		return awaitOutcome(ctx, out, db, ap, res.Request, *wait)
	})
}

// defaultVoteWait bounds how long approve and deny wait for the outcome: a
// registration the registry holds for a while still answers within it.
const defaultVoteWait = 2 * time.Minute

// refError explains a reference Resolve could not use.
func refError(ref string, err error) error {
	if errors.Is(err, approvals.ErrNotFound) {
		return fmt.Errorf("no approval request matches %q (tollgate approvals list --state all shows them)", display.Text(ref, 80))
	}
	return err
}

// withdrawnWhy is the reason a cancelled request gives.
func withdrawnWhy(ctx context.Context, ap *approvals.Service, id string) string {
	if r, err := ap.Get(ctx, id); err == nil && r.DecidedReason != "" {
		return r.DecidedReason
	}
	return "cancelled"
}

// awaitOutcome follows a decided request's operation until it ends (a
// running server executes or releases it), then prints what happened: the
// registration or deploy, or why nothing was done. An operation that
// failed is an error (exit status 1).
func awaitOutcome(ctx context.Context, out io.Writer, db *ledger.DB, ap *approvals.Service, r approvals.Request, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	said := ledger.State("")
	for {
		op, err := db.Operation(ctx, r.OperationID)
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("follow operation %s: %w", r.OperationID, err)
		}
		if err == nil {
			if op.State == ledger.StateExecuting && said != op.State {
				fmt.Fprintf(out, "Executing at Cloudflare…\n")
				said = op.State
			}
			if op.State.Terminal() {
				return printOutcome(ctx, out, ap, r, op)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				fmt.Fprintf(out, "Operation %s is still %s after %s: is tollgate serve running on this database? Follow it with: tollgate approvals show %s\n",
					r.OperationID, op.State, limit, approvals.ShortID(r.ID))
				return nil
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// printOutcome says how an operation ended. The execution's own words (the
// server writes them on the request after it settles) are waited for
// briefly; the operation's record is enough without them.
func printOutcome(ctx context.Context, out io.Writer, ap *approvals.Service, r approvals.Request, op ledger.Operation) error {
	result := ""
	for range 10 {
		if got, err := ap.Get(ctx, r.ID); err == nil && got.ResultText != "" {
			result = got.ResultText
			break
		}
		if op.State != ledger.StateSucceeded {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	t := func(s string) string { return display.Text(s, 500) }
	switch op.State {
	case ledger.StateSucceeded:
		if result == "" {
			charged := "nothing"
			if op.Charged != nil {
				charged = op.Charged.String()
			}
			result = r.Summary + ", charged " + charged
		}
		fmt.Fprintf(out, "Done: %s (operation %s)\n", t(result), op.ID)
		return nil
	case ledger.StateDenied, ledger.StateCancelled, ledger.StateExpired:
		fmt.Fprintf(out, "Operation %s is %s: %s; nothing was charged and its hold is released\n", op.ID, op.State, t(op.Error))
		return nil
	}
	why := op.Error
	if result != "" {
		why = result
	}
	return fmt.Errorf("operation %s %s (%s): %s", op.ID, op.State, op.ErrorCode, t(why))
}

// requestSentence is one request as a line a person reads: who asks for
// what, for how much, where it stands, and how to act on it.
func requestSentence(r approvals.Request, now time.Time) string {
	t := func(s string) string { return display.Text(s, 160) }
	short := approvals.ShortID(r.ID)
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s asks to %s (%s)", short, t(r.Agent), lowerFirst(t(r.Summary)), t(r.AmountText))
	if r.Reason != "" {
		fmt.Fprintf(&b, ", because %q", display.Text(r.Reason, 120))
	}
	switch r.State {
	case approvals.StatePending:
		expires := "expires in " + display.Duration(r.ExpiresAt.Sub(now))
		if !r.ExpiresAt.After(now) {
			expires = "expiring now"
		}
		fmt.Fprintf(&b, ". %d of %d approvals, %s: tollgate approvals approve %s", r.Approvals(), max(r.Quorum, 1), expires, short)
	case approvals.StateCancelled:
		fmt.Fprintf(&b, ". Withdrawn: %s", t(r.DecidedReason))
	default:
		fmt.Fprintf(&b, ". %s: %s", strings.ToUpper(r.State[:1])+r.State[1:], t(r.DecidedReason))
		if r.ResultText != "" {
			fmt.Fprintf(&b, "; %s", t(r.ResultText))
		}
	}
	return b.String() + "."
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToLower(r)) + s[n:]
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

// openConsole prints a one-time sign-in link to the web console for the
// approver this OS user is (the same mapping as approve), and opens it in a
// browser where there is one.
func openConsole(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("approvals open", "sign in to the web console: print (and open) a one-time link")
	cf := addConfigFlags(fs, slices.Concat(ledgerSettings, []setting{
		stringSetting("console-url", "TOLLGATE_CONSOLE_URL", "the console's public URL, when no server has published one", func(c *server.Config) *string { return &c.Console.PublicURL }),
	})...)
	as := fs.String("as", "", "approver name (must be mapped to your OS user in approvers:)")
	printOnly := fs.Bool("print", false, "only print the link; do not open a browser")
	request := fs.String("request", "", "land on this approval request (apr_…) instead of the inbox")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"usage: tollgate approvals open [--as NAME] [--print] [--request apr_…]"}
	}
	next := "/console/"
	if *request != "" {
		if !approvals.ValidRequestID(*request) {
			return usageError{fmt.Sprintf("--request %q: an approval request id, apr_…", display.Text(*request, 80))}
		}
		next += "approvals/" + *request
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
		base, err := web.PublishedBase(ctx, db.Store())
		if err != nil {
			return err
		}
		if base == "" {
			if base = cfg.ConsoleBase(); base == "" {
				return errors.New("no tollgate server with an HTTP listener has run on this database, so there is no console to sign in to; start tollgate serve (transport http) or set --console-url")
			}
			fmt.Fprintf(out, "(no server has published its console address on this database; assuming %s)\n", base)
		}
		link, err := web.MintLink(ctx, ap, base, me.Name, next, cliActor(), cfg.Console.LinkTTL)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "Sign-in link for approver %s (works once, until %s):\n\n  %s\n\n", display.Text(me.Name, 100), link.ExpiresAt.UTC().Format("15:04:05 UTC"), link.URL)
		if !*printOnly {
			if err := openBrowser(ctx, link.URL); err != nil {
				fmt.Fprintf(out, "Open it in your browser (%s).\n", err)
			} else {
				fmt.Fprintln(out, "Opened in your browser.")
			}
		}
		return nil
	})
}

// openBrowser hands url to xdg-open when there is a desktop session.
func openBrowser(ctx context.Context, url string) error {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return errors.New("no desktop session here")
	}
	bin, err := exec.LookPath("xdg-open")
	if err != nil {
		return errors.New("xdg-open is not installed")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, bin, url).Run(); err != nil {
		return fmt.Errorf("xdg-open failed: %w", err)
	}
	return nil
}
