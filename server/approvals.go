package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	slackchan "github.com/tollgatehq/tollgate/approvals/slack"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// ApprovalHooks are how the approvals service reaches the rest of tollgate.
type ApprovalHooks struct {
	Logger    *slog.Logger
	Clock     func() time.Time
	OnDecided func(ctx context.Context, r approvals.Request)
	OnExpired func(ctx context.Context, r approvals.Request)
	OnFreeze  func(ctx context.Context, agent string, by approvals.Approver, via string) error
}

// NewApprovals builds the approvals service on the ledger's database with
// Cerbos deciding who may approve and the ledger's chain recording every
// vote. The server and the local approver CLI share it.
func NewApprovals(db *ledger.DB, az *authz.Client, cfg Config, h ApprovalHooks) (*approvals.Service, error) {
	return approvals.NewService(db.Store(), approvals.Options{
		Approvers:  approversOf(cfg),
		Authorizer: approvalAuthorizer(az),
		Audit:      approvalAudit(db, h.Clock),
		Clock:      h.Clock,
		Logger:     h.Logger,
		OnDecided:  h.OnDecided,
		OnExpired:  h.OnExpired,
		OnFreeze:   h.OnFreeze,
		Mandates:   approvalMandates{MandateCreator{DB: db, Authz: az, Cfg: cfg}},
	})
}

// ApprovalsReader is the approvals service for read-only views (the CLI's
// list and show, console links): it knows cfg's approvers, can read every
// request and refuses every vote.
func ApprovalsReader(db *ledger.DB, cfg Config) (*approvals.Service, error) {
	refuse := func(context.Context, approvals.Approver, approvals.Request, string) (bool, string, error) {
		return false, "read-only view", nil
	}
	return approvals.NewService(db.Store(), approvals.Options{Approvers: approversOf(cfg), Authorizer: refuse, Audit: approvalAudit(db, nil)})
}

func approversOf(cfg Config) []approvals.Approver {
	var out []approvals.Approver
	for _, a := range cfg.Approvers {
		out = append(out, approvals.Approver{Name: a.Name, SlackUserID: a.SlackUserID, OSUser: a.OSUser, Roles: a.Roles})
	}
	return out
}

// approvalCheck is what the policy is asked when approver a acts on request
// r (approve, deny) or could (the quorum check of estimate_cost and of
// start-up): a as the principal, r as an "approval" resource.
func approvalCheck(a approvals.Approver, r approvals.Request) (authz.Principal, authz.Resource) {
	attr := map[string]any{}
	if a.SlackUserID != "" {
		attr["slack_user_id"] = a.SlackUserID
	}
	return authz.Principal{ID: a.Name, Roles: a.Roles, Attr: attr}, authz.Resource{Kind: "approval", ID: r.ID, Attr: map[string]any{
		"requester": r.Agent, "owner": r.Owner, "team": r.Team, "amount_micros": r.AmountMicros,
		"currency": r.Currency, "tool": r.Tool, "irreversible": r.Irreversible,
	}}
}

// approvalAuthorizer asks Cerbos whether an approver may act on a request
// (resource "approval"). Anything but an explicit allow is a refusal.
func approvalAuthorizer(az *authz.Client) approvals.Authorizer {
	return func(ctx context.Context, a approvals.Approver, r approvals.Request, action string) (bool, string, error) {
		p, res := approvalCheck(a, r)
		d := az.Check(ctx, p, res, action)[action]
		if d.Unavailable {
			return false, "", errors.New("policy engine unavailable")
		}
		if !d.Allowed {
			reason := "no policy rule lets " + a.Name + " " + action + " this request"
			if len(d.Reasons) > 0 {
				reason = d.Reasons[0]
			}
			return false, reason, nil
		}
		return true, "", nil
	}
}

// approvalAudit writes the approvals service's events into the ledger's
// chain. now is the clock of the Slack rejection limit (nil: the wall clock).
func approvalAudit(db *ledger.DB, now func() time.Time) approvals.AuditFunc {
	if now == nil {
		now = time.Now
	}
	// Unsigned requests to /slack/interactions are audited, but anyone can
	// send them: past the rate only their number is recorded.
	var forged rateLimit
	return func(ctx context.Context, tx *store.Tx, typ, actor, opID string, data map[string]any) error {
		if typ == slackchan.EventRejected {
			ok, skipped := forged.allow(now())
			if !ok {
				return nil
			}
			if skipped > 0 {
				data["unaudited_before"] = skipped
			}
		}
		e := ledger.NewEvent(typ, actor, opID, data)
		if tx != nil {
			return db.AppendTx(ctx, tx, e)
		}
		return db.Append(ctx, e)
	}
}

// Freeze is the kill switch: it freezes a scope (agent:NAME, team:NAME or
// global), then cancels every pending approval of the principals it covers
// and releases their holds. Operations already executing finish and settle;
// everything else stops. It returns the operations it cancelled.
func Freeze(ctx context.Context, db *ledger.DB, ap *approvals.Service, scope ledger.Scope, reason, by string) ([]string, error) {
	if _, err := db.Freeze(ctx, scope, reason, by); err != nil {
		return nil, fmt.Errorf("freeze %s: %w", scope, err)
	}
	q := ledger.OperationQuery{States: []ledger.State{ledger.StateReserved, ledger.StateAwaitingApproval, ledger.StateApproved}, Limit: 100}
	if name, ok := scope.Agent(); ok {
		q.Agent = name
	} else if team, ok := scope.Team(); ok {
		q.Team = team
	}
	var cancelled []string
	var errs []error
	for {
		ops, next, err := db.ListOperations(ctx, q)
		if err != nil {
			return cancelled, errors.Join(append(errs, fmt.Errorf("list operations to cancel: %w", err))...)
		}
		for _, op := range ops {
			// The kill switch goes on through every operation: a request that
			// expired or was decided meanwhile does not stop the rest.
			if req, err := ap.ByOperation(ctx, op.ID); err == nil && req.State == approvals.StatePending {
				if err := ap.Cancel(ctx, req.ID, "frozen: "+reason, by); err != nil &&
					!errors.Is(err, approvals.ErrAlreadyDecided) && !errors.Is(err, approvals.ErrExpired) &&
					!errors.Is(err, approvals.ErrCancelled) && !errors.Is(err, approvals.ErrNotFound) {
					errs = append(errs, fmt.Errorf("cancel approval %s: %w", req.ID, err))
				}
			}
			_, err := db.ReleaseFrom(ctx, op.ID, q.States, ledger.StateCancelled, "frozen", fmt.Sprintf("%s was frozen by %s: %s", scope, by, reason))
			if errors.Is(err, ledger.ErrStateConflict) {
				continue // it moved on (e.g. started executing) meanwhile
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("cancel %s: %w", op.ID, err))
				continue
			}
			cancelled = append(cancelled, op.ID)
		}
		if next == "" {
			return cancelled, errors.Join(errs...)
		}
		q.Cursor = next
	}
}
