package approvals

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
)

// Standing approvals (mandates) from a channel: "approve this and allow N
// more like it". The core never creates a mandate itself (mandates live in
// the ledger and Cerbos decides what one may cover): Options.Mandates does,
// and ApproveWithMandate ties it to the vote so a channel cannot approve
// without the mandate it showed, or leave a mandate behind a refused vote.

// MandateSpec is what an approver asks for beside their approval.
type MandateSpec struct {
	Pattern    string        // resource pattern: "*.dev", "shop-*" or an exact name
	MaxPerCall money.Money   // most one covered call may cost
	MaxTotal   money.Money   // most all covered calls together may cost
	Count      int           // how many more calls it covers
	Lifetime   time.Duration // how long it lasts (at most 7 days)
}

// MandateOffer is what a channel may offer on a request: whether a mandate
// like it may be given at all, why not, and sensible defaults.
type MandateOffer struct {
	Allowed bool
	Why     string // why not, in words, when !Allowed
	Default MandateSpec
}

// Mandate is a created mandate as a channel shows it.
type Mandate struct {
	ID       string
	Sentence string // "man_… agent may register_domain *.dev up to 15.00 USD each …"
}

// Mandates creates standing approvals for the core; the server implements
// it on the ledger and Cerbos (resource mandate, action create), with the
// self-approval rule and the quorum tiers. The CLI's tollgate mandates
// create runs the same code.
type Mandates interface {
	// Offer says whether ap (nil: any approver with the approver role) may
	// give a mandate for more requests like r, with defaults derived from r.
	Offer(ctx context.Context, ap *Approver, r Request) MandateOffer
	// Create checks and creates a mandate for r's agent and tool as ap
	// through via. A refusal is a *MandateRefusedError.
	Create(ctx context.Context, ap Approver, r Request, spec MandateSpec, via string) (Mandate, error)
	// Revoke ends a mandate at once (a vote refused after its mandate was created).
	Revoke(ctx context.Context, id, by string) error
}

// MandateRefusedError: the mandate was not created (policy, owner rule,
// quorum, or bad input); Reason says why in words.
type MandateRefusedError struct{ Reason string }

func (e *MandateRefusedError) Error() string { return "mandate refused: " + e.Reason }

// ErrMandatesUnavailable: the service has no Options.Mandates.
var ErrMandatesUnavailable = errors.New("standing approvals are not enabled on this server")

// MandateOfferFor is the offer of a mandate on r to approver (nil: any
// approver, e.g. a Slack message everyone in the channel sees). No offer
// without Options.Mandates, or on a request that is no longer pending.
func (s *Service) MandateOfferFor(ctx context.Context, approver *Approver, r Request) MandateOffer {
	if s.o.Mandates == nil {
		return MandateOffer{Why: ErrMandatesUnavailable.Error()}
	}
	if r.State != StatePending {
		return MandateOffer{Why: "this request is " + r.State}
	}
	return s.o.Mandates.Offer(ctx, approver, r)
}

// ApproveWithMandate records an approve vote together with a mandate for
// more requests like it. Every rule of the vote is checked first, then the
// mandate is created (its own checks: policy, owner, quorum), then the vote
// is recorded. A refused mandate approves nothing; a vote refused after the
// mandate was created revokes the mandate. v.Outcome must be approve.
func (s *Service) ApproveWithMandate(ctx context.Context, v VoteInput, spec MandateSpec) (Outcome, Mandate, error) {
	if v.Outcome != OutcomeApprove {
		return Outcome{}, Mandate{}, fmt.Errorf("%w: a mandate goes with an approve vote, not %q", ErrInvalidInput, clip(v.Outcome, 40))
	}
	if s.o.Mandates == nil {
		return Outcome{}, Mandate{}, ErrMandatesUnavailable
	}
	r, ap, err := s.check(ctx, v)
	if err != nil {
		return Outcome{}, Mandate{}, err
	}
	m, err := s.o.Mandates.Create(ctx, ap, r, spec, v.Via)
	if err != nil {
		return Outcome{}, Mandate{}, s.reject(ctx, &r, v, &ap, err)
	}
	out, err := s.Decide(ctx, v)
	if err != nil {
		if rerr := s.o.Mandates.Revoke(context.WithoutCancel(ctx), m.ID, "system: the approval it came with was refused"); rerr != nil {
			return Outcome{}, Mandate{}, fmt.Errorf("%w; and revoking mandate %s failed: %v", err, m.ID, rerr)
		}
		return Outcome{}, Mandate{}, err
	}
	return out, m, nil
}

// Approver returns the configured approver called name (case-insensitive).
func (s *Service) Approver(name string) (Approver, bool) {
	a, ok := s.byName[strings.ToLower(name)]
	return a, ok
}
