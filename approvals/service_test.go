package approvals_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/approvalstest"
)

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, approvals.Approver, approvals.Request, string) (bool, string, error) {
		return false, "", nil
	}
	tests := []struct {
		name string
		o    approvals.Options
		want []string
	}{
		{"missing funcs", approvals.Options{}, []string{"Authorizer is required", "Audit is required"}},
		{"bad approvers", approvals.Options{Authorizer: noop, Audit: (&approvalstest.AuditLog{}).Fn, Approvers: []approvals.Approver{
			{Name: ""},
			{Name: "alice", SlackUserID: "U1ALICE"},
			{Name: "Alice", SlackUserID: "not-an-id"},
			{Name: "bob", SlackUserID: "U1ALICE"},
		}}, []string{"approver 0: name is required", `"Alice": listed twice`, `slack_user_id "not-an-id"`, `"alice" and "bob" share slack_user_id`}},
		{"bad durations", approvals.Options{Authorizer: noop, Audit: (&approvalstest.AuditLog{}).Fn, RetryMin: time.Minute, RetryMax: time.Second}, []string{"RetryMin 1m0s is above RetryMax 1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.o.Validate()
			if err == nil {
				t.Fatal("Validate accepted bad options")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if err := (approvals.Options{Authorizer: noop, Audit: (&approvalstest.AuditLog{}).Fn, Approvers: approvalstest.Approvers}).Validate(); err != nil {
		t.Fatalf("good options refused: %v", err)
	}
}

func TestRequestValidation(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testRequestValidation)
}

func testRequestValidation(t *testing.T) {
	t.Parallel()
	f := approvalstest.New(t)
	tests := []struct {
		name string
		mut  func(*approvals.Request)
		want string
	}{
		{"no operation", func(r *approvals.Request) { r.OperationID = "" }, "operation_id is required"},
		{"no tool", func(r *approvals.Request) { r.Tool = " " }, "tool is required"},
		{"no agent", func(r *approvals.Request) { r.Agent = "" }, "agent is required"},
		{"no hash", func(r *approvals.Request) { r.ArgsHash = "" }, "args_hash is required"},
		{"negative amount", func(r *approvals.Request) { r.AmountMicros = -1 }, "amount_micros -1 is negative"},
		{"bad currency", func(r *approvals.Request) { r.Currency = "usd" }, `currency "usd" is not an ISO 4217 code`},
		{"no expiry", func(r *approvals.Request) { r.ExpiresAt = time.Time{} }, "expires_at is required"},
		{"past expiry", func(r *approvals.Request) { r.ExpiresAt = f.Clock.Now().Add(-time.Second) }, "is not in the future"},
		{"negative quorum", func(r *approvals.Request) { r.Quorum = -2 }, "quorum -2 must be at least 1"},
		{"unmeetable quorum", func(r *approvals.Request) { r.Quorum = 4 }, "quorum 4 cannot be met: 3 configured approver(s)"},
		{"bad id", func(r *approvals.Request) { r.ID = "apr_UPPER" }, `id "apr_UPPER" must be`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := approvalstest.DomainRequest(f.Clock.Now())
			tt.mut(&r)
			_, err := f.Svc.Request(context.Background(), r)
			if !errors.Is(err, approvals.ErrInvalidInput) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want approvals.ErrInvalidInput mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRequestPersistsAndIsIdempotentPerOperation(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testRequestPersistsAndIsIdempotentPerOperation)
}

func testRequestPersistsAndIsIdempotentPerOperation(t *testing.T) {
	t.Parallel()
	f := approvalstest.New(t)
	in := approvalstest.DomainRequest(f.Clock.Now())
	in.Quorum = 0
	in.AmountText = ""
	in.Module = &approvals.Module{Name: "worker.js", Size: 1234, SHA256: approvalstest.ArgsHash("module"), FirstLines: "export default {}"}
	r, err := f.Svc.Request(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.ID, "apr_") || len(r.ID) != 30 {
		t.Errorf("id %q, want apr_ + 26 chars", r.ID)
	}
	if r.State != approvals.StatePending || r.Quorum != 1 || r.AmountText != "12.20 USD" || !r.CreatedAt.Equal(f.Clock.Now()) {
		t.Errorf("request = %+v", r)
	}
	got := f.Get(r.ID)
	if got.Summary != in.Summary || len(got.Args) != 4 || got.Args[3] != in.Args[3] || got.Module == nil || *got.Module != *in.Module ||
		!got.ExpiresAt.Equal(in.ExpiresAt) || got.ArgsHash != in.ArgsHash || !got.Irreversible || len(got.Headroom) != 2 {
		t.Errorf("stored request differs: %+v", got)
	}
	byOp, err := f.Svc.ByOperation(context.Background(), in.OperationID)
	if err != nil || byOp.ID != r.ID {
		t.Fatalf("ByOperation = %v, %v", byOp.ID, err)
	}
	if ev := f.Audit.Events(t, approvals.EventRequested); len(ev) != 1 || ev[0].OperationID != in.OperationID || ev[0].Data["request_id"] != r.ID {
		t.Fatalf("audit = %+v", ev)
	}

	again, err := f.Svc.Request(context.Background(), in)
	if err != nil || again.ID != r.ID {
		t.Fatalf("same operation and binding: %v, %v; want the stored request", again.ID, err)
	}
	changed := in
	changed.ArgsHash = approvalstest.ArgsHash("other args")
	if _, err := f.Svc.Request(context.Background(), changed); !errors.Is(err, approvals.ErrBindingMismatch) {
		t.Fatalf("other binding under the same operation: %v, want ErrBindingMismatch", err)
	}
	if n := len(f.Audit.Events(t, approvals.EventRequested)); n != 1 {
		t.Fatalf("%d approval.requested events, want 1", n)
	}
	if _, err := f.Svc.ByOperation(context.Background(), "op_missing"); !errors.Is(err, approvals.ErrNotFound) {
		t.Fatalf("ByOperation(missing) = %v", err)
	}
}

func TestDecideCLI(t *testing.T) { t.Parallel(); approvalstest.EachBackend(t, testDecideCLI) }

func testDecideCLI(t *testing.T) {
	t.Parallel()
	type step struct {
		who, outcome, reason string
		wantErr              error
		wantFinal            bool
	}
	tests := []struct {
		name      string
		mut       func(*approvals.Request)
		steps     []step
		wantState string
		wantCodes []string // approval.rejected codes
	}{
		{"approve", nil, []step{{"alice", approvals.OutcomeApprove, "", nil, true}}, approvals.StateApproved, nil},
		{"deny is final at once", func(r *approvals.Request) { r.Quorum = 2 },
			[]step{{"alice", approvals.OutcomeDeny, "wrong TLD for marketing", nil, true}}, approvals.StateDenied, nil},
		{"quorum of two", func(r *approvals.Request) { r.Quorum = 2 }, []step{
			{"alice", approvals.OutcomeApprove, "", nil, false},
			{"bob", approvals.OutcomeApprove, "", nil, true},
		}, approvals.StateApproved, nil},
		{"quorum: same approver twice", func(r *approvals.Request) { r.Quorum = 2 }, []step{
			{"alice", approvals.OutcomeApprove, "", nil, false},
			{"alice", approvals.OutcomeApprove, "", approvals.ErrDuplicateVote, false},
		}, approvals.StatePending, []string{"duplicate_vote"}},
		{"owner may not approve", nil, []step{{"dave", approvals.OutcomeApprove, "", approvals.ErrSelfApproval, false}}, approvals.StatePending, []string{"self_approval"}},
		{"owner may not deny either", nil, []step{{"dave", approvals.OutcomeDeny, "no", approvals.ErrSelfApproval, false}}, approvals.StatePending, []string{"self_approval"}},
		{"agent's namesake may not approve", func(r *approvals.Request) { r.Agent = "bob"; r.Owner = "" },
			[]step{{"bob", approvals.OutcomeApprove, "", approvals.ErrSelfApproval, false}}, approvals.StatePending, []string{"self_approval"}},
		{"non-approver", nil, []step{{"mallory", approvals.OutcomeApprove, "", approvals.ErrNotApprover, false}}, approvals.StatePending, []string{"not_approver"}},
		{"policy limit", func(r *approvals.Request) { r.AmountMicros = 250_000_000 }, []step{
			{"alice", approvals.OutcomeApprove, "", &approvals.NotAllowedError{}, false},
			{"carol", approvals.OutcomeApprove, "", nil, true},
		}, approvals.StateApproved, []string{"not_allowed"}},
		{"second vote after decision", nil, []step{
			{"alice", approvals.OutcomeApprove, "", nil, true},
			{"bob", approvals.OutcomeDeny, "late", approvals.ErrAlreadyDecided, false},
		}, approvals.StateApproved, []string{"already_decided"}},
		{"bad outcome", nil, []step{{"alice", "maybe", "", approvals.ErrInvalidInput, false}}, approvals.StatePending, []string{"invalid_input"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := approvalstest.New(t)
			r := f.Request(tt.mut)
			for i, st := range tt.steps {
				out, err := f.Svc.Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: st.who, Via: approvals.ViaCLI, Outcome: st.outcome, Reason: st.reason})
				var na *approvals.NotAllowedError
				switch {
				case st.wantErr == nil && err != nil:
					t.Fatalf("step %d: %v", i, err)
				case st.wantErr == nil:
					if out.Final != st.wantFinal {
						t.Fatalf("step %d: final = %v, want %v", i, out.Final, st.wantFinal)
					}
				case errors.As(st.wantErr, &na):
					if !errors.As(err, &na) || na.Reason == "" {
						t.Fatalf("step %d: err = %v, want approvals.NotAllowedError with a reason", i, err)
					}
				case !errors.Is(err, st.wantErr):
					t.Fatalf("step %d: err = %v, want %v", i, err, st.wantErr)
				}
			}
			got := f.Get(r.ID)
			if got.State != tt.wantState {
				t.Fatalf("state %s, want %s", got.State, tt.wantState)
			}
			if codes := f.Audit.Codes(t, approvals.EventRejected); strings.Join(codes, ",") != strings.Join(tt.wantCodes, ",") {
				t.Fatalf("rejections audited %v, want %v", codes, tt.wantCodes)
			}
			if tt.wantState == approvals.StatePending {
				f.NoDecision()
				if n := len(f.Audit.Events(t, approvals.EventDecided)); n != 0 {
					t.Fatalf("%d decisions audited", n)
				}
				return
			}
			d := f.MustDecided(tt.wantState)
			if d.ID != r.ID || d.DecidedAt.IsZero() {
				t.Fatalf("OnDecided got %+v", d)
			}
			f.NoDecision() // exactly once
			if n := len(f.Audit.Events(t, approvals.EventDecided)); n != 1 {
				t.Fatalf("%d approval.decided events, want 1", n)
			}
		})
	}
}

func TestDecideRecordsVotesAndAudit(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testDecideRecordsVotesAndAudit)
}

func testDecideRecordsVotesAndAudit(t *testing.T) {
	t.Parallel()
	f := approvalstest.New(t)
	r := f.Request(func(r *approvals.Request) { r.Quorum = 2 })
	f.Clock.Advance(time.Minute)
	out, err := f.Svc.Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove})
	if err != nil {
		t.Fatal(err)
	}
	if out.Final || out.Approvals != 1 || out.Needed != 2 || len(out.Request.Votes) != 1 {
		t.Fatalf("outcome %+v", out)
	}
	v := out.Request.Votes[0]
	if v.Approver != "alice" || v.User != "" || v.Via != approvals.ViaCLI || !v.At.Equal(f.Clock.Now()) {
		t.Fatalf("vote %+v", v)
	}
	ev := f.Audit.Events(t, approvals.EventVoted)
	if len(ev) != 1 || ev[0].Actor != "cli:alice" || ev[0].OperationID != r.OperationID || ev[0].Data["approvals"] != float64(1) || ev[0].Data["final"] != false {
		t.Fatalf("vote audit %+v", ev)
	}
	if _, err := f.Svc.Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, User: "U0CAROL", Approver: "carol", Via: approvals.ViaSlack, Outcome: approvals.OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	got := f.MustDecided(approvals.StateApproved)
	if got.DecidedReason != "approved by alice, carol" || got.Approvals() != 2 {
		t.Fatalf("decided %+v", got)
	}
	if ev := f.Audit.Events(t, approvals.EventDecided); len(ev) != 1 || ev[0].Actor != "slack:U0CAROL" || ev[0].Data["state"] != approvals.StateApproved {
		t.Fatalf("decision audit %+v", ev)
	}
	if ev := f.Audit.Events(t, approvals.EventVoted); len(ev) != 2 || ev[1].Data["user"] != "U0CAROL" || ev[1].Data["via"] != approvals.ViaSlack {
		t.Fatalf("vote audit %+v", ev)
	}
	// A channel user who maps to no approver is refused, named in the channel's terms.
	r2 := f.Request(nil)
	_, err = f.Svc.Decide(context.Background(), approvals.VoteInput{RequestID: r2.ID, User: "U0NOBODY", Via: approvals.ViaSlack, Outcome: approvals.OutcomeApprove})
	if !errors.Is(err, approvals.ErrNotApprover) || !strings.Contains(err.Error(), "Slack user U0NOBODY") {
		t.Fatalf("unknown channel user: %v", err)
	}
	if ev := f.Audit.Events(t, approvals.EventRejected); len(ev) != 1 || ev[0].Actor != "slack:U0NOBODY" || ev[0].Data["code"] != "not_approver" {
		t.Fatalf("rejection audit %+v", ev)
	}
}

func TestDecideAuthorizerErrorFailsClosed(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testDecideAuthorizerErrorFailsClosed)
}

func testDecideAuthorizerErrorFailsClosed(t *testing.T) {
	t.Parallel()
	f := approvalstest.New(t, func(o *approvals.Options, _ *approvalstest.Fixture) {
		o.Authorizer = func(context.Context, approvals.Approver, approvals.Request, string) (bool, string, error) {
			return true, "", errors.New("rpc error: code = Unavailable desc = connection refused")
		}
	})
	r := f.Request(nil)
	_, err := f.Svc.Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove})
	var na *approvals.NotAllowedError
	if !errors.As(err, &na) || !strings.Contains(na.Reason, "could not be asked") || errors.Unwrap(na) == nil {
		t.Fatalf("err = %v, want approvals.NotAllowedError wrapping the policy error", err)
	}
	if got := f.Get(r.ID); got.State != approvals.StatePending || len(got.Votes) != 0 {
		t.Fatalf("request changed: %+v", got)
	}
	f.NoDecision()
}

func TestExpiryNeverDenies(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testExpiryNeverDenies)
}

func testExpiryNeverDenies(t *testing.T) {
	t.Parallel()
	f := approvalstest.New(t)
	a := f.Request(func(r *approvals.Request) { r.Quorum = 2 })
	b := f.Request(func(r *approvals.Request) { r.ExpiresAt = f.Clock.Now().Add(2 * time.Hour) })
	if _, err := f.Svc.Decide(context.Background(), approvals.VoteInput{RequestID: a.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Svc.ExpireDue(context.Background()); err != nil || len(got) != 0 {
		t.Fatalf("ExpireDue before expiry = %v, %v", got, err)
	}
	f.Clock.Advance(30 * time.Minute)
	got, err := f.Svc.ExpireDue(context.Background())
	if err != nil || len(got) != 1 || got[0].ID != a.ID || got[0].State != approvals.StateExpired {
		t.Fatalf("ExpireDue = %+v, %v", got, err)
	}
	if !strings.Contains(got[0].DecidedReason, "1 of 2 approvals") {
		t.Errorf("reason %q", got[0].DecidedReason)
	}
	select {
	case e := <-f.Expired:
		if e.ID != a.ID || e.State != approvals.StateExpired {
			t.Fatalf("OnExpired(%+v)", e)
		}
	default:
		t.Fatal("OnExpired did not fire")
	}
	f.NoDecision()
	if again, _ := f.Svc.ExpireDue(context.Background()); len(again) != 0 {
		t.Fatalf("expired twice: %+v", again)
	}
	// A vote after expiry is refused as expired, and b is untouched.
	_, err = f.Svc.Decide(context.Background(), approvals.VoteInput{RequestID: a.ID, Approver: "bob", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove})
	if !errors.Is(err, approvals.ErrExpired) {
		t.Fatalf("vote after expiry: %v", err)
	}
	if f.Get(b.ID).State != approvals.StatePending {
		t.Fatal("unexpired request changed")
	}
	if ev := f.Audit.Events(t, approvals.EventExpired); len(ev) != 1 || ev[0].Actor != "system" {
		t.Fatalf("expiry audit %+v", ev)
	}
	if n := len(f.Audit.Events(t, approvals.EventDecided)); n != 0 {
		t.Fatalf("an expiry was audited as a decision")
	}
}

func TestDecideOnDueRequestExpiresIt(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testDecideOnDueRequestExpiresIt)
}

func testDecideOnDueRequestExpiresIt(t *testing.T) {
	t.Parallel()
	f := approvalstest.New(t)
	r := f.Request(nil)
	f.Clock.Advance(31 * time.Minute) // Run has not expired it yet
	_, err := f.Svc.Decide(context.Background(), approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove})
	if !errors.Is(err, approvals.ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
	if got := f.Get(r.ID); got.State != approvals.StateExpired || len(got.Votes) != 0 {
		t.Fatalf("state %s votes %d, want expired with no votes", got.State, len(got.Votes))
	}
	if e := <-f.Expired; e.ID != r.ID {
		t.Fatal("OnExpired missing")
	}
	f.NoDecision()
	if codes := f.Audit.Codes(t, approvals.EventRejected); strings.Join(codes, ",") != "expired" {
		t.Fatalf("rejections %v", codes)
	}
}

func TestConsume(t *testing.T) { t.Parallel(); approvalstest.EachBackend(t, testConsume) }

func testConsume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	approved := func(f *approvalstest.Fixture) approvals.Request {
		r := f.Request(nil)
		if _, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove}); err != nil {
			t.Fatal(err)
		}
		return f.Get(r.ID)
	}
	tests := []struct {
		name   string
		setup  func(f *approvalstest.Fixture) approvals.Request
		hash   func(r approvals.Request) string
		amount int64
		cur    string
		want   []error
	}{
		{"exact", approved, nil, 12_200_000, "USD", nil},
		{"cheaper", approved, nil, 11_000_000, "USD", nil},
		{"binding mismatch", approved, func(approvals.Request) string { return approvalstest.ArgsHash("changed args") }, 12_200_000, "USD", []error{approvals.ErrBindingMismatch}},
		{"amount above max", approved, nil, 12_200_001, "USD", []error{approvals.ErrBindingMismatch, approvals.ErrAmountExceeded}},
		{"other currency", approved, nil, 12_200_000, "EUR", []error{approvals.ErrBindingMismatch}},
		{"pending", func(f *approvalstest.Fixture) approvals.Request { return f.Request(nil) }, nil, 12_200_000, "USD", []error{approvals.ErrNotApproved}},
		{"denied", func(f *approvalstest.Fixture) approvals.Request {
			r := f.Request(nil)
			if _, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaCLI, Outcome: approvals.OutcomeDeny, Reason: "no"}); err != nil {
				t.Fatal(err)
			}
			return r
		}, nil, 12_200_000, "USD", []error{approvals.ErrNotApproved}},
		{"missing", func(f *approvalstest.Fixture) approvals.Request {
			return approvals.Request{ID: "apr_missing", ArgsHash: "x"}
		}, nil, 1, "USD", []error{approvals.ErrNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := approvalstest.New(t)
			r := tt.setup(f)
			hash := r.ArgsHash
			if tt.hash != nil {
				hash = tt.hash(r)
			}
			err := f.Svc.Consume(ctx, r.ID, hash, tt.amount, tt.cur)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if got := f.Get(r.ID); !got.Consumed || got.ConsumedAt.IsZero() {
					t.Fatal("not marked consumed")
				}
				if ev := f.Audit.Events(t, approvals.EventConsumed); len(ev) != 1 || ev[0].OperationID != r.OperationID {
					t.Fatalf("consume audit %+v", ev)
				}
				// Single use: a second execution is refused.
				if err := f.Svc.Consume(ctx, r.ID, hash, tt.amount, tt.cur); !errors.Is(err, approvals.ErrConsumed) {
					t.Fatalf("second consume: %v, want ErrConsumed", err)
				}
				if codes := f.Audit.Codes(t, approvals.EventConsumeRejected); strings.Join(codes, ",") != "consumed" {
					t.Fatalf("refusals audited %v", codes)
				}
				return
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Fatalf("err = %v, want %v", err, w)
				}
			}
			if got, gerr := f.Svc.Get(ctx, r.ID); gerr == nil && got.Consumed {
				t.Fatal("refused consume marked the approval used")
			}
			if n := len(f.Audit.Events(t, approvals.EventConsumeRejected)); n != 1 {
				t.Fatalf("%d refusals audited, want 1", n)
			}
		})
	}
}

func TestCancelAndFinish(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testCancelAndFinish)
}

func testCancelAndFinish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := approvalstest.New(t)
	r := f.Request(nil)
	if err := f.Svc.Cancel(ctx, r.ID, "agent web-bot frozen by alice", "cli:alice"); err != nil {
		t.Fatal(err)
	}
	got := f.Get(r.ID)
	if got.State != approvals.StateCancelled || got.DecidedReason != "agent web-bot frozen by alice" {
		t.Fatalf("%+v", got)
	}
	if err := f.Svc.Cancel(ctx, r.ID, "again", "x"); !errors.Is(err, approvals.ErrCancelled) {
		t.Fatalf("second cancel: %v", err)
	}
	if _, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove}); !errors.Is(err, approvals.ErrCancelled) {
		t.Fatalf("vote on cancelled: %v", err)
	}
	if ev := f.Audit.Events(t, approvals.EventCancelled); len(ev) != 1 || ev[0].Actor != "cli:alice" {
		t.Fatalf("cancel audit %+v", ev)
	}
	f.NoDecision()
	// Deliveries never hand a cancellation to OnDecided/OnExpired.
	f.Svc.Tick(ctx)
	f.NoDecision()

	due := f.Request(nil)
	f.Clock.Advance(time.Hour)
	if err := f.Svc.Cancel(ctx, due.ID, "freeze", "system"); !errors.Is(err, approvals.ErrExpired) {
		t.Fatalf("cancel after expiry: %v, want ErrExpired", err)
	}
	if f.Get(due.ID).State != approvals.StateExpired {
		t.Fatal("due request not expired")
	}

	if err := f.Svc.Finish(ctx, r.ID, "registered example.dev until 2027-11-22"); err != nil {
		t.Fatal(err)
	}
	if f.Get(r.ID).ResultText != "registered example.dev until 2027-11-22" {
		t.Fatal("result not stored")
	}
	if err := f.Svc.Finish(ctx, "apr_missing", "x"); !errors.Is(err, approvals.ErrNotFound) {
		t.Fatalf("Finish(missing) = %v", err)
	}
}

func TestAuditFailureFailsClosed(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testAuditFailureFailsClosed)
}

func testAuditFailureFailsClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := approvalstest.New(t)
	f.Audit.Fail.Store(true)
	if _, err := f.Svc.Request(ctx, approvalstest.DomainRequest(f.Clock.Now())); err == nil {
		t.Fatal("request persisted without its audit event")
	}
	if all, _ := f.Svc.List(ctx); len(all) != 0 {
		t.Fatalf("%d requests stored without audit", len(all))
	}
	f.Audit.Fail.Store(false)
	r := f.Request(nil)
	f.Audit.Fail.Store(true)
	if _, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove}); err == nil {
		t.Fatal("vote recorded without its audit event")
	}
	if got := f.Get(r.ID); got.State != approvals.StatePending || len(got.Votes) != 0 {
		t.Fatalf("vote kept after audit failure: %+v", got)
	}
	f.NoDecision()
	// A refusal whose audit fails is still a refusal.
	_, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "mallory", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove})
	if !errors.Is(err, approvals.ErrNotApprover) || !strings.Contains(err.Error(), "audit rejection") {
		t.Fatalf("err = %v", err)
	}
}

func TestListAndApproverForOSUser(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testListAndApproverForOSUser)
}

func testListAndApproverForOSUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := approvalstest.New(t)
	a := f.Request(nil)
	f.Clock.Advance(time.Second)
	b := f.Request(nil)
	if _, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: a.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	all, err := f.Svc.List(ctx)
	if err != nil || len(all) != 2 || all[0].ID != b.ID || all[1].ID != a.ID || len(all[1].Votes) != 1 {
		t.Fatalf("List() = %v, %v", all, err)
	}
	pending, err := f.Svc.List(ctx, approvals.StatePending)
	if err != nil || len(pending) != 1 || pending[0].ID != b.ID {
		t.Fatalf("List(pending) = %v, %v", pending, err)
	}
	if _, err := f.Svc.List(ctx, "open"); !errors.Is(err, approvals.ErrInvalidInput) || !strings.Contains(err.Error(), "states are pending, approved") {
		t.Fatalf("List(open) = %v", err)
	}
	for user, want := range map[string]string{"alice": "alice", "cjones": "carol", "bob": "bob", "carol": "", "mallory": ""} {
		got, ok := f.Svc.ApproverForOSUser(user)
		if (want == "") == ok || got.Name != want {
			t.Errorf("ApproverForOSUser(%q) = %q, %v; want %q", user, got.Name, ok, want)
		}
	}
}

// TestDecisionFromAnotherProcess: the CLI (no hooks) decides in its own process;
// the server's Run hands the decision to OnDecided exactly once.
func TestDecisionFromAnotherProcess(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testDecisionFromAnotherProcess)
}

func testDecisionFromAnotherProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	server := approvalstest.New(t)
	r := server.Request(nil)
	cliDB := approvalstest.OpenHandle(t, server.Path)
	cli, err := approvals.NewService(cliDB, approvals.Options{Approvers: approvalstest.Approvers, Authorizer: approvalstest.PolicyAuthorizer(nil), Audit: (&approvalstest.AuditLog{DB: cliDB}).Fn,
		Clock: server.Clock.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	server.NoDecision()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- server.Svc.Run(runCtx) }()
	got := server.MustDecided(approvals.StateApproved)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.ID != r.ID || got.Votes[0].Via != approvals.ViaCLI {
		t.Fatalf("delivered %+v", got)
	}
	server.Svc.Tick(ctx)
	server.NoDecision()
}

// TestConcurrentVotes: three approvers vote at once from two processes (two
// handles on one file) on a quorum-2 request: exactly two votes count, the
// decision is made once, and the late vote is refused.
func TestConcurrentVotes(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testConcurrentVotes)
}

func testConcurrentVotes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := approvalstest.New(t)
	other := f.OtherProcess()
	for range 5 {
		r := f.Request(func(r *approvals.Request) { r.Quorum = 2 })
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for i, who := range []string{"alice", "bob", "carol"} {
			svc := f.Svc
			if i%2 == 1 {
				svc = other
			}
			wg.Go(func() {
				_, err := svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: who, Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		var refused int
		for err := range errs {
			if err != nil {
				if !errors.Is(err, approvals.ErrAlreadyDecided) {
					t.Fatalf("unexpected refusal: %v", err)
				}
				refused++
			}
		}
		got := f.Get(r.ID)
		if refused != 1 || got.State != approvals.StateApproved || len(got.Votes) != 2 {
			t.Fatalf("refused %d, state %s, votes %d", refused, got.State, len(got.Votes))
		}
	}
	// Decisions completed by the other process reach this one's hook through Run's delivery.
	f.Svc.Tick(ctx)
	for range 5 {
		f.MustDecided(approvals.StateApproved)
	}
	f.NoDecision()
}

// TestAbilitiesOf: the buttons a channel offers follow every rule of a vote,
// and asking records nothing.
func TestAbilitiesOf(t *testing.T) { t.Parallel(); approvalstest.EachBackend(t, testAbilitiesOf) }

func testAbilitiesOf(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := approvalstest.New(t)
	r := f.Request(func(r *approvals.Request) { r.Quorum = 2 })
	f.Clock.Advance(time.Second)
	big := f.Request(func(r *approvals.Request) { r.AmountMicros, r.AmountText = 150_000_000, "150.00 USD" })
	tests := []struct {
		name, approver string
		r              approvals.Request
		vote, freeze   bool
		why            string
	}{
		{"approver", "bob", r, true, true, ""},
		{"owner", "dave", r, false, true, "dave owns agent web-bot"},
		{"not an approver", "mallory", r, false, false, "not a configured approver"},
		{"above the role's limit", "bob", big, false, true, "need a finance_approver"},
		{"finance approver", "carol", big, true, true, ""},
	}
	for _, tt := range tests {
		ab := f.Svc.AbilitiesOf(ctx, tt.approver, tt.r)
		if ab.Approve != tt.vote || ab.Deny != tt.vote || ab.Freeze != tt.freeze || !strings.Contains(ab.Why, tt.why) {
			t.Errorf("%s: %+v", tt.name, ab)
		}
	}
	if _, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaWeb, Outcome: approvals.OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	if ab := f.Svc.AbilitiesOf(ctx, "bob", f.Get(r.ID)); ab.Approve || !strings.Contains(ab.Why, "already voted") {
		t.Errorf("after voting: %+v", ab)
	}
	f.Clock.Advance(time.Hour)
	if ab := f.Svc.AbilitiesOf(ctx, "carol", f.Get(r.ID)); ab.Approve || !strings.Contains(ab.Why, "expired") {
		t.Errorf("after expiry: %+v", ab)
	}
	if n := len(f.Audit.Events(t, approvals.EventRejected)); n != 0 {
		t.Errorf("asking recorded %d refusals", n)
	}
	recent, err := f.Svc.Recent(ctx, 1)
	if err != nil || len(recent) != 1 || recent[0].ID != big.ID {
		t.Errorf("Recent(1) = %v, %v; want the newest request", recent, err)
	}
	// List reads every request's votes in one query and gives each its own.
	all, err := f.Svc.List(ctx)
	if err != nil || len(all) != 2 || len(all[0].Votes) != 0 || len(all[1].Votes) != 1 || all[1].Votes[0].Approver != "bob" {
		t.Errorf("List = %+v, %v", all, err)
	}
	if _, err := f.Svc.Recent(ctx, 0); !errors.Is(err, approvals.ErrInvalidInput) {
		t.Errorf("Recent(0): %v", err)
	}
}
