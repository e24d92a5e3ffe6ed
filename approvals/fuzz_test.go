package approvals_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/approvalstest"
)

// FuzzVoteInput: votes from any channel with arbitrary fields never panic and
// are either recorded for a configured approver or refused with
// approvals.ErrInvalidInput, a refusal sentinel, or approvals.NotAllowedError.
func FuzzVoteInput(f *testing.F) {
	fx := approvalstest.New(f)
	target := fx.Request(func(r *approvals.Request) { r.ID = "apr_fuzzvote"; r.Quorum = 3 })
	f.Add(target.ID, "", "alice", approvals.ViaCLI, approvals.OutcomeApprove, "")
	f.Add(target.ID, "U0DAVE", "dave", approvals.ViaSlack, approvals.OutcomeDeny, "mine")
	f.Add("apr_missing", "U0BOB", "bob", approvals.ViaSocket, approvals.OutcomeApprove, "")
	f.Add("", "", "", "", "", "")
	f.Add(target.ID, "U0BOB", "", approvals.ViaSlack, approvals.OutcomeApprove, strings.Repeat("x", 3001))
	f.Add(target.ID, "", "ALICE", approvals.ViaWeb, approvals.OutcomeApprove, "\xff")
	f.Fuzz(func(t *testing.T, id, user, name, via, outcome, reason string) {
		out, err := fx.Svc.Decide(context.Background(), approvals.VoteInput{RequestID: id, User: user, Approver: name, Via: via, Outcome: outcome, Reason: reason})
		if err == nil {
			last := out.Request.Votes[len(out.Request.Votes)-1]
			if last.Approver == "dave" || (last.Approver != "alice" && last.Approver != "bob" && last.Approver != "carol") {
				t.Fatalf("vote recorded for %q", last.Approver)
			}
			return
		}
		var na *approvals.NotAllowedError
		for _, known := range []error{approvals.ErrInvalidInput, approvals.ErrNotFound, approvals.ErrExpired, approvals.ErrAlreadyDecided, approvals.ErrNotApprover, approvals.ErrSelfApproval, approvals.ErrDuplicateVote, approvals.ErrCancelled} {
			if errors.Is(err, known) {
				return
			}
		}
		if !errors.As(err, &na) {
			t.Fatalf("unexpected error: %v", err)
		}
	})
}
