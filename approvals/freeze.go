package approvals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// ErrFreezeFailed: Freeze was allowed but OnFreeze failed, so the agent is not frozen.
var ErrFreezeFailed = errors.New("freezing the agent failed")

// FreezeInput asks Freeze to stop the agent of a request. Approver and User
// name the person as in VoteInput.
type FreezeInput struct {
	RequestID string
	Approver  string
	User      string
	Via       string
}

// Freeze stops the agent of a request on an approver's word (the Freeze agent
// button of any channel): the person must be a configured approver whom the
// policy allows action freeze on the request, and the request must exist.
// Its state does not matter: stopping an agent is always allowed to the
// allowed. Refusals are audited and returned (ErrNotFound, ErrNotApprover,
// *NotAllowedError, ErrFreezeUnavailable, ErrFreezeFailed); success is
// audited as approval.freeze. It returns the request whose agent it froze.
func (s *Service) Freeze(ctx context.Context, in FreezeInput) (Request, error) {
	v := VoteInput{RequestID: in.RequestID, Approver: in.Approver, User: in.User, Via: in.Via, Outcome: ActionFreeze}
	ap, isApprover := s.resolveVoter(v)
	var apRef *Approver
	if isApprover {
		apRef = &ap
	}
	if !requestIDPattern.MatchString(in.RequestID) || !validVia(in.Via) {
		return Request{}, s.reject(ctx, nil, v, apRef, fmt.Errorf("%w: freeze: request id %q, via %q", ErrInvalidInput, clip(in.RequestID, 80), clip(in.Via, 40)))
	}
	r, err := s.loadRequest(ctx, s.st, in.RequestID)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			s.log.ErrorContext(ctx, "read request for freeze", slog.String("request_id", in.RequestID), slog.String("error", err.Error()))
		}
		return Request{}, s.reject(ctx, nil, v, apRef, fmt.Errorf("approval %s: %w", in.RequestID, err))
	}
	if !isApprover {
		return r, s.reject(ctx, &r, v, nil, fmt.Errorf("%w: %s", ErrNotApprover, voterLabel(v)))
	}
	allowed, reason, err := s.o.Authorizer(ctx, ap, r, ActionFreeze)
	switch {
	case err != nil:
		return r, s.reject(ctx, &r, v, apRef, &NotAllowedError{Reason: "the policy engine could not be asked: " + err.Error(), cause: err})
	case !allowed:
		if reason == "" {
			reason = "no policy rule allows " + ap.Name + " to freeze agents"
		}
		return r, s.reject(ctx, &r, v, apRef, &NotAllowedError{Reason: reason})
	case s.o.OnFreeze == nil:
		return r, s.reject(ctx, &r, v, apRef, ErrFreezeUnavailable)
	}
	if err := s.o.OnFreeze(ctx, r.Agent, ap, in.Via); err != nil {
		ferr := fmt.Errorf("%w: agent %s: %w", ErrFreezeFailed, r.Agent, err)
		_ = s.reject(ctx, &r, v, apRef, ferr)
		return r, ferr
	}
	if err := s.o.Audit(ctx, nil, EventFreezeRequested, actorFor(v, &ap), r.OperationID, map[string]any{
		"request_id": r.ID,
		"agent":      r.Agent,
		"approver":   ap.Name,
		"via":        in.Via,
	}); err != nil {
		s.log.ErrorContext(ctx, "audit freeze", slog.String("request_id", r.ID), slog.String("error", err.Error()))
	}
	s.log.InfoContext(ctx, "agent frozen by an approver", slog.String("agent", r.Agent), slog.String("approver", ap.Name),
		slog.String("via", in.Via), slog.String("request_id", r.ID))
	return r, nil
}
