package approvals_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/approvalstest"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// fakeMandates refuses per-call maxima above 20 and records what it did.
type fakeMandates struct {
	mu      sync.Mutex
	created []string
	revoked []string
}

func (f *fakeMandates) Offer(context.Context, *approvals.Approver, approvals.Request) approvals.MandateOffer {
	return approvals.MandateOffer{Allowed: true}
}

func (f *fakeMandates) Create(_ context.Context, ap approvals.Approver, r approvals.Request, spec approvals.MandateSpec, via string) (approvals.Mandate, error) {
	if spec.MaxPerCall.Micros > 20_000_000 {
		return approvals.Mandate{}, &approvals.MandateRefusedError{Reason: "over 20"}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, via+":"+ap.Name+":"+r.ID)
	return approvals.Mandate{ID: "man_test"}, nil
}

func (f *fakeMandates) Revoke(_ context.Context, id, by string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, id)
	return nil
}

// TestApproveWithMandate: the vote and the mandate go together. A refused
// mandate records no vote (and is audited as a rejection); a refused vote
// creates no mandate; a good one records both.
func TestApproveWithMandate(t *testing.T) {
	t.Parallel()
	fm := &fakeMandates{}
	f := approvalstest.New(t, func(o *approvals.Options, _ *approvalstest.Fixture) { o.Mandates = fm })
	r := f.Request(nil)
	spec := func(perCall int64) approvals.MandateSpec {
		return approvals.MandateSpec{Pattern: "*.dev", MaxPerCall: money.Money{Micros: perCall, Currency: "USD"}, MaxTotal: money.Money{Micros: 100_000_000, Currency: "USD"}, Count: 3, Lifetime: time.Hour}
	}
	ctx := context.Background()
	vote := approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaWeb, Outcome: approvals.OutcomeApprove}

	var mr *approvals.MandateRefusedError
	if _, _, err := f.Svc.ApproveWithMandate(ctx, vote, spec(25_000_000)); !errors.As(err, &mr) {
		t.Fatalf("a refused mandate: %v", err)
	}
	if got := f.Get(r.ID); len(got.Votes) != 0 {
		t.Fatalf("a refused mandate voted: %+v", got.Votes)
	}
	if ev := f.Audit.Events(t, approvals.EventRejected); len(ev) != 1 || ev[0].Data["code"] != "mandate_refused" {
		t.Fatalf("rejections %+v", ev)
	}
	// The owner's vote is refused before any mandate is made.
	owner := vote
	owner.Approver = r.Owner
	if _, _, err := f.Svc.ApproveWithMandate(ctx, owner, spec(15_000_000)); !errors.Is(err, approvals.ErrSelfApproval) {
		t.Fatalf("the owner: %v", err)
	}
	deny := vote
	deny.Outcome = approvals.OutcomeDeny
	if _, _, err := f.Svc.ApproveWithMandate(ctx, deny, spec(15_000_000)); !errors.Is(err, approvals.ErrInvalidInput) {
		t.Fatalf("a deny with a mandate: %v", err)
	}
	if len(fm.created) != 0 {
		t.Fatalf("mandates made for refused votes: %v", fm.created)
	}
	if _, m, err := f.Svc.ApproveWithMandate(ctx, vote, spec(15_000_000)); err != nil || m.ID != "man_test" {
		t.Fatalf("approve + mandate: %+v, %v", m, err)
	}
	f.MustDecided(approvals.StateApproved)
	if len(fm.created) != 1 || fm.created[0] != "web:bob:"+r.ID || len(fm.revoked) != 0 {
		t.Fatalf("created %v, revoked %v", fm.created, fm.revoked)
	}
	// Without Options.Mandates there is nothing to offer and nothing to create.
	plain := approvalstest.New(t)
	r2 := plain.Request(nil)
	if o := plain.Svc.MandateOfferFor(ctx, nil, r2); o.Allowed {
		t.Fatal("an offer without Mandates")
	}
	vote.RequestID = r2.ID
	if _, _, err := plain.Svc.ApproveWithMandate(ctx, vote, spec(1)); !errors.Is(err, approvals.ErrMandatesUnavailable) {
		t.Fatalf("without Mandates: %v", err)
	}
}
