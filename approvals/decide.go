package approvals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// errRollback makes a write transaction roll back when a check inside the transaction refuses
// the change; the refusal itself is carried beside it.
var errRollback = errors.New("rollback")

// maxReasonRunes bounds a vote reason (Slack's plain-text input maximum).
const maxReasonRunes = 3000

// maxResultRunes bounds the stored execution result text.
const maxResultRunes = 4000

func validateVote(v VoteInput) error {
	var problems []string
	if !requestIDPattern.MatchString(v.RequestID) {
		problems = append(problems, fmt.Sprintf("request id %q must look like apr_…", clip(v.RequestID, 80)))
	}
	if !validVia(v.Via) {
		problems = append(problems, fmt.Sprintf("via %q must be slack, socket, cli or web", clip(v.Via, 40)))
	}
	switch v.Outcome {
	case OutcomeApprove, OutcomeDeny:
	default:
		problems = append(problems, fmt.Sprintf("outcome %q must be approve or deny", clip(v.Outcome, 40)))
	}
	if v.User == "" && v.Approver == "" {
		problems = append(problems, "the voter is missing: set the approver name or the channel's user")
	}
	if n := utf8.RuneCountInString(v.Reason); n > maxReasonRunes {
		problems = append(problems, fmt.Sprintf("reason has %d characters; at most %d are allowed", n, maxReasonRunes))
	}
	if !utf8.ValidString(v.Reason) {
		problems = append(problems, "reason is not valid UTF-8")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: vote: %s", ErrInvalidInput, strings.Join(problems, "; "))
	}
	return nil
}

// clip shortens untrusted input quoted in an error message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// resolveVoter maps the approver name the channel resolved to a configured approver.
func (s *Service) resolveVoter(v VoteInput) (Approver, bool) {
	if v.Approver == "" {
		return Approver{}, false
	}
	a, ok := s.byName[strings.ToLower(v.Approver)]
	return a, ok
}

// actorFor names the voter in the audit trail: the channel's own user when it
// has one (slack:U…), else the approver as the channel named them (cli:bob, web:bob).
func actorFor(v VoteInput, ap *Approver) string {
	prefix := v.Via
	if prefix == ViaSocket {
		prefix = ViaSlack
	}
	if !validVia(prefix) {
		prefix = "unknown"
	}
	switch {
	case v.User != "":
		return prefix + ":" + clip(v.User, 80)
	case ap != nil:
		return prefix + ":" + ap.Name
	case v.Approver != "":
		return prefix + ":" + clip(v.Approver, 80)
	}
	return "unknown"
}

// voterLabel names a voter who is no approver, for the refusal.
func voterLabel(v VoteInput) string {
	if v.User != "" {
		return ViaLabel(v.Via) + " user " + clip(v.User, 40)
	}
	return clip(v.Approver, 80)
}

// rejectionCode is the machine code of a refusal, for the audit trail.
func rejectionCode(err error) string {
	var na *NotAllowedError
	var mr *MandateRefusedError
	switch {
	case errors.As(err, &na):
		return "not_allowed"
	case errors.As(err, &mr):
		return "mandate_refused"
	case errors.Is(err, ErrInvalidInput):
		return "invalid_input"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrAlreadyDecided):
		return "already_decided"
	case errors.Is(err, ErrWithdrawn):
		return "withdrawn"
	case errors.Is(err, ErrCancelled):
		return "cancelled"
	case errors.Is(err, ErrNotApprover):
		return "not_approver"
	case errors.Is(err, ErrSelfApproval):
		return "self_approval"
	case errors.Is(err, ErrDuplicateVote):
		return "duplicate_vote"
	case errors.Is(err, ErrAmountExceeded):
		return "amount_exceeded"
	case errors.Is(err, ErrBindingMismatch):
		return "binding_mismatch"
	case errors.Is(err, ErrConsumed):
		return "consumed"
	case errors.Is(err, ErrNotApproved):
		return "not_approved"
	case errors.Is(err, ErrFreezeUnavailable):
		return "freeze_unavailable"
	case errors.Is(err, ErrFreezeFailed):
		return "freeze_failed"
	}
	return "error"
}

// reject audits a refused vote or click (outside any transaction) and returns
// the refusal. If the audit fails too, both errors are returned: the vote is
// refused either way.
func (s *Service) reject(ctx context.Context, r *Request, v VoteInput, ap *Approver, cause error) error {
	data := map[string]any{
		"request_id": v.RequestID,
		"code":       rejectionCode(cause),
		"reason":     cause.Error(),
		"via":        v.Via,
		"action":     v.Outcome,
	}
	if ap != nil {
		data["approver"] = ap.Name
	}
	if v.User != "" {
		data["user"] = clip(v.User, 80)
	}
	opID := ""
	if r != nil {
		opID = r.OperationID
	}
	s.log.InfoContext(ctx, "approval vote rejected",
		slog.String("request_id", v.RequestID), slog.String("code", rejectionCode(cause)),
		slog.String("via", v.Via), slog.String("action", v.Outcome), slog.String("error", cause.Error()))
	if err := s.o.Audit(ctx, nil, EventRejected, actorFor(v, ap), opID, data); err != nil {
		s.log.ErrorContext(ctx, "audit of a rejected vote failed", slog.String("request_id", v.RequestID), slog.String("error", err.Error()))
		return errors.Join(cause, fmt.Errorf("audit rejection: %w", err))
	}
	return cause
}

// stateError is the refusal for a request that is no longer pending.
func stateError(r Request) error {
	switch r.State {
	case StatePending:
		return nil
	case StateExpired:
		return fmt.Errorf("approval %s: %w at %s", r.ID, ErrExpired, r.ExpiresAt.Format(time.RFC3339))
	case StateCancelled:
		if r.Withdrawn {
			return fmt.Errorf("approval %s: %w: %s", r.ID, ErrWithdrawn, r.DecidedReason)
		}
		return fmt.Errorf("approval %s: %w: %s", r.ID, ErrCancelled, r.DecidedReason)
	default:
		return fmt.Errorf("approval %s: %w: %s", r.ID, ErrAlreadyDecided, r.State)
	}
}

func hasVoted(r Request, a Approver) bool {
	for _, v := range r.Votes {
		if strings.EqualFold(v.Approver, a.Name) {
			return true
		}
	}
	return false
}

// Check runs every refusal rule of a vote without recording the vote; each
// refusal is audited. A channel asks it before it asks the voter for more (the
// deny reason). It returns the request and the voter.
func (s *Service) Check(ctx context.Context, v VoteInput) (Request, Approver, error) {
	return s.check(ctx, v)
}

// check runs every refusal rule of a vote without recording anything; each
// refusal is audited. Decide runs it, then re-checks what can change inside
// its transaction. The Authorizer is called here, outside any transaction: the
// write handle has one connection and a callback must never run while it is held.
func (s *Service) check(ctx context.Context, v VoteInput) (Request, Approver, error) {
	if err := validateVote(v); err != nil {
		return Request{}, Approver{}, s.reject(ctx, nil, v, nil, err)
	}
	ap, isApprover := s.resolveVoter(v)
	var apRef *Approver
	if isApprover {
		apRef = &ap
	}
	r, err := s.loadRequest(ctx, s.st, v.RequestID)
	if errors.Is(err, ErrNotFound) {
		return Request{}, ap, s.reject(ctx, nil, v, apRef, fmt.Errorf("approval %s: %w", v.RequestID, ErrNotFound))
	}
	if err != nil {
		return Request{}, ap, fmt.Errorf("check vote on %s: %w", v.RequestID, err)
	}
	if err := stateError(r); err != nil {
		return r, ap, s.reject(ctx, &r, v, apRef, err)
	}
	if !s.now().Before(r.ExpiresAt) {
		if err := s.expireOne(ctx, r.ID); err != nil && !errors.Is(err, ErrExpired) {
			return r, ap, fmt.Errorf("check vote on %s: %w", v.RequestID, err)
		}
		return r, ap, s.reject(ctx, &r, v, apRef, fmt.Errorf("approval %s: %w at %s", r.ID, ErrExpired, r.ExpiresAt.Format(time.RFC3339)))
	}
	if !isApprover {
		return r, ap, s.reject(ctx, &r, v, nil, fmt.Errorf("%w: %s", ErrNotApprover, voterLabel(v)))
	}
	if isSelf(ap, r) {
		return r, ap, s.reject(ctx, &r, v, apRef, fmt.Errorf("%w: %s owns agent %s", ErrSelfApproval, ap.Name, r.Agent))
	}
	if hasVoted(r, ap) {
		return r, ap, s.reject(ctx, &r, v, apRef, fmt.Errorf("%w: %s", ErrDuplicateVote, ap.Name))
	}
	allowed, reason, err := s.o.Authorizer(ctx, ap, r, v.Outcome)
	if err != nil {
		return r, ap, s.reject(ctx, &r, v, apRef, &NotAllowedError{Reason: "the policy engine could not be asked: " + err.Error(), cause: err})
	}
	if !allowed {
		if reason == "" {
			reason = "no policy rule allows " + ap.Name + " to " + v.Outcome + " this request"
		}
		return r, ap, s.reject(ctx, &r, v, apRef, &NotAllowedError{Reason: reason})
	}
	return r, ap, nil
}

// Decide records one vote. It maps the voter to an approver and checks that the
// request exists, is pending and not expired (an expired one is marked expired,
// never denied), that the voter is a configured approver and not the agent's
// owner, that the Authorizer allows the action and that the approver has not
// voted yet. A deny is final at once; approve becomes final at Quorum distinct
// approvers. Every accepted vote and every refusal is audited. After a final
// decision commits, OnDecided runs, then the Slack message is updated.
func (s *Service) Decide(ctx context.Context, v VoteInput) (Outcome, error) {
	_, ap, err := s.check(ctx, v)
	if err != nil {
		return Outcome{}, err
	}
	var (
		out       Outcome
		refusal   error
		expiredID string
	)
	err = s.st.Write(ctx, func(tx *store.Tx) error {
		r, err := s.loadRequest(ctx, tx, v.RequestID)
		if err != nil {
			return err
		}
		now := s.now()
		// Re-check what may have changed since check: another vote, expiry, cancel.
		if err := stateError(r); err != nil {
			refusal = err
			return errRollback
		}
		if !now.Before(r.ExpiresAt) {
			if err := s.expireTx(ctx, tx, &r, now); err != nil {
				return err
			}
			expiredID = r.ID
			refusal = fmt.Errorf("approval %s: %w at %s", r.ID, ErrExpired, r.ExpiresAt.Format(time.RFC3339))
			return nil // commit the expiry; the vote is refused below
		}
		if hasVoted(r, ap) {
			refusal = fmt.Errorf("%w: %s", ErrDuplicateVote, ap.Name)
			return errRollback
		}
		vote := Vote{Approver: ap.Name, User: v.User, Via: v.Via, Outcome: v.Outcome, Reason: strings.TrimSpace(v.Reason), At: now}
		if _, err := tx.ExecContext(ctx, `INSERT INTO approval_votes (request_id, approver, channel_user, via, outcome, reason, at, seq)
			VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM approval_votes))`, r.ID, vote.Approver, vote.User, vote.Via, vote.Outcome, vote.Reason, now.UnixNano()); err != nil {
			return fmt.Errorf("insert vote: %w", err)
		}
		r.Votes = append(r.Votes, vote)
		approvals := r.Approvals()
		final := false
		switch {
		case v.Outcome == OutcomeDeny:
			final = true
			r.State = StateDenied
			r.DecidedReason = vote.Reason
			if r.DecidedReason == "" {
				r.DecidedReason = "denied by " + ap.Name
			}
		case approvals >= r.Quorum:
			final = true
			r.State = StateApproved
			r.DecidedReason = "approved by " + approverNames(r.Votes, OutcomeApprove)
		}
		if final {
			r.DecidedAt = now
			if _, err = tx.ExecContext(ctx, `UPDATE approval_requests SET state = ?, decided_reason = ?, decided_at = ?
				WHERE id = ? AND state = 'pending'`, r.State, r.DecidedReason, now.UnixNano(), r.ID); err != nil {
				return fmt.Errorf("update request: %w", err)
			}
		}
		if err := touch(ctx, tx, r.ID); err != nil {
			return err
		}
		actor := actorFor(v, &ap)
		if err := s.o.Audit(ctx, tx, EventVoted, actor, r.OperationID, map[string]any{
			"request_id": r.ID,
			"approver":   ap.Name,
			"user":       vote.User,
			"via":        vote.Via,
			"outcome":    vote.Outcome,
			"reason":     vote.Reason,
			"approvals":  approvals,
			"needed":     r.Quorum,
			"final":      final,
		}); err != nil {
			return fmt.Errorf("audit vote: %w", err)
		}
		if final {
			if err := s.o.Audit(ctx, tx, EventDecided, actor, r.OperationID, map[string]any{
				"request_id":    r.ID,
				"state":         r.State,
				"reason":        r.DecidedReason,
				"approvers":     approverNames(r.Votes, ""),
				"via":           vote.Via,
				"args_hash":     r.ArgsHash,
				"amount_micros": r.AmountMicros,
				"currency":      r.Currency,
			}); err != nil {
				return fmt.Errorf("audit decision: %w", err)
			}
		}
		out = Outcome{Request: r, Final: final, Approvals: approvals, Needed: r.Quorum}
		return nil
	})
	if errors.Is(err, errRollback) || (err == nil && refusal != nil) {
		if expiredID != "" {
			s.afterChange(ctx, expiredID, true)
		}
		r, _ := s.loadRequest(ctx, s.st, v.RequestID)
		return Outcome{}, s.reject(ctx, &r, v, &ap, refusal)
	}
	if err != nil {
		return Outcome{}, fmt.Errorf("decide %s: %w", v.RequestID, err)
	}
	s.log.InfoContext(ctx, "approval vote recorded",
		slog.String("request_id", out.Request.ID), slog.String("operation_id", out.Request.OperationID),
		slog.String("approver", ap.Name), slog.String("via", v.Via), slog.String("outcome", v.Outcome),
		slog.Int("approvals", out.Approvals), slog.Int("needed", out.Needed), slog.Bool("final", out.Final))
	s.afterChange(ctx, out.Request.ID, out.Final)
	if r, err := s.loadRequest(ctx, s.st, out.Request.ID); err == nil {
		out.Request = r
	}
	return out, nil
}

// afterChange runs the post-commit work of a change: the hook (when the change
// is a decision or an expiry), then the channels' posts.
func (s *Service) afterChange(ctx context.Context, id string, decided bool) {
	if decided {
		s.deliver(ctx, id)
	}
	s.syncRequest(ctx, id)
}

func approverNames(votes []Vote, outcome string) string {
	var names []string
	for _, v := range votes {
		if outcome == "" || v.Outcome == outcome {
			names = append(names, v.Approver)
		}
	}
	return strings.Join(names, ", ")
}

// expireTx marks a pending request expired inside tx and audits it.
func (s *Service) expireTx(ctx context.Context, tx *store.Tx, r *Request, now time.Time) error {
	reason := fmt.Sprintf("expired at %s with %d of %d approvals; nothing was approved",
		r.ExpiresAt.Format(time.RFC3339), r.Approvals(), r.Quorum)
	res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET state = 'expired', decided_reason = ?, decided_at = ?
		WHERE id = ? AND state = 'pending'`, reason, now.UnixNano(), r.ID)
	if err != nil {
		return fmt.Errorf("expire %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil
	}
	if err := touch(ctx, tx, r.ID); err != nil {
		return err
	}
	r.State, r.DecidedReason, r.DecidedAt = StateExpired, reason, now
	if err := s.o.Audit(ctx, tx, EventExpired, "system", r.OperationID, map[string]any{
		"request_id": r.ID,
		"expires_at": r.ExpiresAt.Format(time.RFC3339Nano),
		"approvals":  r.Approvals(),
		"needed":     r.Quorum,
	}); err != nil {
		return fmt.Errorf("audit expiry: %w", err)
	}
	return nil
}

// expireOne expires one request if it is pending and due.
func (s *Service) expireOne(ctx context.Context, id string) error {
	expired := false
	err := s.st.Write(ctx, func(tx *store.Tx) error {
		r, err := s.loadRequest(ctx, tx, id)
		if err != nil {
			return err
		}
		now := s.now()
		if r.State != StatePending || now.Before(r.ExpiresAt) {
			return nil
		}
		expired = true
		return s.expireTx(ctx, tx, &r, now)
	})
	if err != nil {
		return err
	}
	if expired {
		s.afterChange(ctx, id, true)
	}
	return nil
}

// ExpireDue marks every pending request past its expiry as expired (audited),
// then runs OnExpired for each and updates their posts.
func (s *Service) ExpireDue(ctx context.Context) ([]Request, error) {
	var ids []string
	err := s.st.Write(ctx, func(tx *store.Tx) error {
		now := s.now()
		rows, err := tx.QueryContext(ctx, `SELECT id FROM approval_requests WHERE state = 'pending' AND expires_at <= ? ORDER BY expires_at`, now.UnixNano())
		if err != nil {
			return fmt.Errorf("find due: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("find due: %w", err)
			}
			ids = append(ids, id)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("find due: %w", err)
		}
		for _, id := range ids {
			r, err := s.loadRequest(ctx, tx, id)
			if err != nil {
				return err
			}
			if err := s.expireTx(ctx, tx, &r, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("expire approvals: %w", err)
	}
	out := make([]Request, 0, len(ids))
	for _, id := range ids {
		s.log.InfoContext(ctx, "approval expired", slog.String("request_id", id))
		s.afterChange(ctx, id, true)
		r, err := s.loadRequest(ctx, s.st, id)
		if err != nil {
			return out, fmt.Errorf("expire approvals: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Consume spends the approval on one execution: the request must be approved
// and not consumed, argsHash must equal the bound hash and amountMicros must not
// exceed the bound maximum in the same currency. Otherwise it returns the
// matching error and changes nothing. Both outcomes are audited.
func (s *Service) Consume(ctx context.Context, requestID, argsHash string, amountMicros int64, currency string) error {
	var (
		refusal error
		r       Request
	)
	err := s.st.Write(ctx, func(tx *store.Tx) error {
		var err error
		r, err = s.loadRequest(ctx, tx, requestID)
		if errors.Is(err, ErrNotFound) {
			refusal = fmt.Errorf("approval %s: %w", requestID, ErrNotFound)
			return errRollback
		}
		if err != nil {
			return err
		}
		if refusal = consumeRefusal(r, argsHash, amountMicros, currency); refusal != nil {
			return errRollback
		}
		now := s.now()
		res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET consumed_at = ? WHERE id = ? AND state = 'approved' AND consumed_at IS NULL`, now.UnixNano(), r.ID)
		if err != nil {
			return fmt.Errorf("mark consumed: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			refusal = fmt.Errorf("approval %s: %w", r.ID, ErrConsumed)
			return errRollback
		}
		return s.o.Audit(ctx, tx, EventConsumed, "system", r.OperationID, map[string]any{
			"request_id":    r.ID,
			"args_hash":     argsHash,
			"amount_micros": amountMicros,
			"currency":      currency,
			"max_micros":    r.AmountMicros,
		})
	})
	if errors.Is(err, errRollback) {
		data := map[string]any{
			"request_id":    requestID,
			"code":          rejectionCode(refusal),
			"reason":        refusal.Error(),
			"args_hash":     argsHash,
			"amount_micros": amountMicros,
			"currency":      currency,
		}
		if aerr := s.o.Audit(ctx, nil, EventConsumeRejected, "system", r.OperationID, data); aerr != nil {
			return errors.Join(refusal, fmt.Errorf("audit refused consume: %w", aerr))
		}
		s.log.WarnContext(ctx, "approval consume refused", slog.String("request_id", requestID), slog.String("code", rejectionCode(refusal)), slog.String("error", refusal.Error()))
		return refusal
	}
	if err != nil {
		return fmt.Errorf("consume approval %s: %w", requestID, err)
	}
	return nil
}

func consumeRefusal(r Request, argsHash string, amountMicros int64, currency string) error {
	switch r.State {
	case StateApproved:
	case StatePending:
		return fmt.Errorf("approval %s: %w: still pending", r.ID, ErrNotApproved)
	case StateDenied:
		return fmt.Errorf("approval %s: %w: denied (%s)", r.ID, ErrNotApproved, r.DecidedReason)
	default:
		return stateError(r)
	}
	if r.Consumed {
		return fmt.Errorf("approval %s: %w at %s", r.ID, ErrConsumed, r.ConsumedAt.Format(time.RFC3339))
	}
	if argsHash != r.ArgsHash {
		return fmt.Errorf("approval %s: %w: arguments hash %s differs from the approved %s", r.ID, ErrBindingMismatch, clip(argsHash, 80), r.ArgsHash)
	}
	if currency != r.Currency {
		return fmt.Errorf("approval %s: %w: currency %s differs from the approved %s", r.ID, ErrBindingMismatch, clip(currency, 10), r.Currency)
	}
	if amountMicros < 0 {
		return fmt.Errorf("approval %s: %w: amount %d is negative", r.ID, ErrInvalidInput, amountMicros)
	}
	if amountMicros > r.AmountMicros {
		return fmt.Errorf("approval %s: %w: %w: %s is above the approved %s", r.ID, ErrBindingMismatch, ErrAmountExceeded,
			money.FormatMicros(amountMicros, currency), money.FormatMicros(r.AmountMicros, r.Currency))
	}
	return nil
}

// Cancel moves a pending request to cancelled (the agent was frozen) and
// updates its message. A request that is no longer pending returns the matching
// error; one past its expiry is marked expired and returns ErrExpired.
func (s *Service) Cancel(ctx context.Context, requestID, reason, by string) error {
	return s.cancel(ctx, requestID, reason, by, false)
}

// Withdraw cancels a pending request because its agent no longer wants it
// (cancel_operation, a cancelled MCP request or task): like Cancel, audited
// as approval.withdrawn by the agent, and every later vote, in any channel,
// is refused with ErrWithdrawn ("withdrawn by the agent"). by is the agent's
// audit actor ("agent:web-bot").
func (s *Service) Withdraw(ctx context.Context, requestID, reason, by string) error {
	reason = strings.TrimSpace(display.Text(reason, 300))
	if reason == "" {
		reason = "no reason given"
	}
	return s.cancel(ctx, requestID, "withdrawn by the agent: "+reason, by, true)
}

func (s *Service) cancel(ctx context.Context, requestID, reason, by string, withdrawn bool) error {
	if strings.TrimSpace(reason) == "" {
		reason = "cancelled"
	}
	if strings.TrimSpace(by) == "" {
		by = "system"
	}
	var refusal error
	expired := false
	err := s.st.Write(ctx, func(tx *store.Tx) error {
		r, err := s.loadRequest(ctx, tx, requestID)
		if errors.Is(err, ErrNotFound) {
			refusal = fmt.Errorf("approval %s: %w", requestID, ErrNotFound)
			return errRollback
		}
		if err != nil {
			return err
		}
		if refusal = stateError(r); refusal != nil {
			return errRollback
		}
		now := s.now()
		if !now.Before(r.ExpiresAt) {
			expired = true
			refusal = fmt.Errorf("approval %s: %w at %s", r.ID, ErrExpired, r.ExpiresAt.Format(time.RFC3339))
			return s.expireTx(ctx, tx, &r, now)
		}
		// A cancellation has no hook: the caller (the freeze, the withdrawal) already knows.
		if _, err := tx.ExecContext(ctx, `UPDATE approval_requests SET state = 'cancelled', decided_reason = ?, decided_at = ?,
			dispatched_at = ?, withdrawn = ? WHERE id = ? AND state = 'pending'`, reason, now.UnixNano(), now.UnixNano(), boolInt(withdrawn), r.ID); err != nil {
			return fmt.Errorf("cancel: %w", err)
		}
		if err := touch(ctx, tx, r.ID); err != nil {
			return err
		}
		event := EventCancelled
		if withdrawn {
			event = EventWithdrawn
		}
		return s.o.Audit(ctx, tx, event, by, r.OperationID, map[string]any{
			"request_id": r.ID,
			"reason":     reason,
			"approvals":  r.Approvals(),
			"needed":     r.Quorum,
		})
	})
	switch {
	case errors.Is(err, errRollback):
		return refusal
	case err != nil:
		return fmt.Errorf("cancel approval %s: %w", requestID, err)
	case expired:
		s.afterChange(ctx, requestID, true)
		return refusal
	}
	s.log.InfoContext(ctx, "approval cancelled", slog.String("request_id", requestID), slog.String("by", by))
	s.afterChange(ctx, requestID, false)
	return nil
}

// Finish stores the execution result and shows it on the channels' posts.
func (s *Service) Finish(ctx context.Context, requestID, resultText string) error {
	resultText = display.Text(resultText, maxResultRunes)
	err := s.st.Write(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET result_text = ? WHERE id = ?`, resultText, requestID)
		if err != nil {
			return fmt.Errorf("store result: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return touch(ctx, tx, requestID)
	})
	if err != nil {
		return fmt.Errorf("finish approval %s: %w", requestID, err)
	}
	s.syncRequest(ctx, requestID)
	return nil
}

// Abilities says which buttons a channel should offer an approver on a
// request: every rule of a vote is applied (pending and not expired,
// configured approver, not the agent or its owner, not voted yet, the policy
// for approve and deny), and the policy for freeze, without recording
// anything. Why explains a refusal in words. A channel that shows buttons by
// it still votes through Decide, which checks everything again.
type Abilities struct {
	Approve, Deny, Freeze bool
	Why                   string
}

// AbilitiesOf reports what approver may do on r now.
func (s *Service) AbilitiesOf(ctx context.Context, approver string, r Request) Abilities {
	ap, ok := s.byName[strings.ToLower(approver)]
	if !ok {
		return Abilities{Why: approver + " is not a configured approver"}
	}
	var ab Abilities
	allowed := func(action string) (bool, string) {
		ok, reason, err := s.o.Authorizer(ctx, ap, r, action)
		switch {
		case err != nil:
			return false, "the policy engine could not be asked: " + err.Error()
		case !ok && reason == "":
			return false, "no policy rule allows " + ap.Name + " to " + action + " this request"
		}
		return ok, reason
	}
	ab.Freeze, _ = allowed(ActionFreeze)
	switch {
	case stateError(r) != nil:
		ab.Why = "this request is " + r.State
		if r.Withdrawn {
			ab.Why = "this request was withdrawn by the agent"
		}
	case !s.now().Before(r.ExpiresAt):
		ab.Why = "this request expired at " + r.ExpiresAt.Format(time.RFC3339)
	case isSelf(ap, r):
		ab.Why = ap.Name + " owns agent " + r.Agent + ", so another approver has to decide"
	case hasVoted(r, ap):
		ab.Why = ap.Name + " already voted on this request"
	default:
		var whyA, whyD string
		ab.Approve, whyA = allowed(OutcomeApprove)
		ab.Deny, whyD = allowed(OutcomeDeny)
		if !ab.Approve {
			ab.Why = whyA
		} else if !ab.Deny {
			ab.Why = whyD
		}
	}
	return ab
}
