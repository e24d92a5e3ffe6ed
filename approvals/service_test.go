package approvals

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, Approver, Request, string) (bool, string, error) { return false, "", nil }
	tests := []struct {
		name string
		o    Options
		want []string
	}{
		{"missing funcs", Options{}, []string{"Authorizer is required", "Audit is required"}},
		{"bad approvers", Options{Authorizer: noop, Audit: (&auditLog{}).fn, Approvers: []Approver{
			{Name: ""},
			{Name: "alice", SlackUserID: "U1ALICE"},
			{Name: "Alice", SlackUserID: "not-an-id"},
			{Name: "bob", SlackUserID: "U1ALICE"},
		}}, []string{"approver 0: name is required", `"Alice": listed twice`, `slack_user_id "not-an-id"`, `"alice" and "bob" share slack_user_id`}},
		{"bad durations", Options{Authorizer: noop, Audit: (&auditLog{}).fn, RetryMin: time.Minute, RetryMax: time.Second}, []string{"RetryMin 1m0s is above RetryMax 1s"}},
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
	if err := (Options{Authorizer: noop, Audit: (&auditLog{}).fn, Approvers: testApprovers}).Validate(); err != nil {
		t.Fatalf("good options refused: %v", err)
	}
}

func TestRequestValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		name string
		mut  func(*Request)
		want string
	}{
		{"no operation", func(r *Request) { r.OperationID = "" }, "operation_id is required"},
		{"no tool", func(r *Request) { r.Tool = " " }, "tool is required"},
		{"no agent", func(r *Request) { r.Agent = "" }, "agent is required"},
		{"no hash", func(r *Request) { r.ArgsHash = "" }, "args_hash is required"},
		{"negative amount", func(r *Request) { r.AmountMicros = -1 }, "amount_micros -1 is negative"},
		{"bad currency", func(r *Request) { r.Currency = "usd" }, `currency "usd" is not an ISO 4217 code`},
		{"no expiry", func(r *Request) { r.ExpiresAt = time.Time{} }, "expires_at is required"},
		{"past expiry", func(r *Request) { r.ExpiresAt = f.clock.Now().Add(-time.Second) }, "is not in the future"},
		{"negative quorum", func(r *Request) { r.Quorum = -2 }, "quorum -2 must be at least 1"},
		{"unmeetable quorum", func(r *Request) { r.Quorum = 4 }, "quorum 4 cannot be met: 3 configured approver(s)"},
		{"bad id", func(r *Request) { r.ID = "apr_UPPER" }, `id "apr_UPPER" must be`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := domainRequest(f.clock.Now())
			tt.mut(&r)
			_, err := f.svc.Request(context.Background(), r)
			if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalidInput mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRequestPersistsAndIsIdempotentPerOperation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := domainRequest(f.clock.Now())
	in.Quorum = 0
	in.AmountText = ""
	in.Module = &Module{Name: "worker.js", Size: 1234, SHA256: argsHash("module"), FirstLines: "export default {}"}
	r, err := f.svc.Request(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.ID, "apr_") || len(r.ID) != 30 {
		t.Errorf("id %q, want apr_ + 26 chars", r.ID)
	}
	if r.State != StatePending || r.Quorum != 1 || r.AmountText != "12.20 USD" || !r.CreatedAt.Equal(f.clock.Now()) {
		t.Errorf("request = %+v", r)
	}
	got := f.get(r.ID)
	if got.Summary != in.Summary || len(got.Args) != 4 || got.Args[3] != in.Args[3] || got.Module == nil || *got.Module != *in.Module ||
		!got.ExpiresAt.Equal(in.ExpiresAt) || got.ArgsHash != in.ArgsHash || !got.Irreversible || len(got.Headroom) != 2 {
		t.Errorf("stored request differs: %+v", got)
	}
	byOp, err := f.svc.ByOperation(context.Background(), in.OperationID)
	if err != nil || byOp.ID != r.ID {
		t.Fatalf("ByOperation = %v, %v", byOp.ID, err)
	}
	if ev := f.audit.events(t, EventRequested); len(ev) != 1 || ev[0].OperationID != in.OperationID || ev[0].Data["request_id"] != r.ID {
		t.Fatalf("audit = %+v", ev)
	}

	again, err := f.svc.Request(context.Background(), in)
	if err != nil || again.ID != r.ID {
		t.Fatalf("same operation and binding: %v, %v; want the stored request", again.ID, err)
	}
	changed := in
	changed.ArgsHash = argsHash("other args")
	if _, err := f.svc.Request(context.Background(), changed); !errors.Is(err, ErrBindingMismatch) {
		t.Fatalf("other binding under the same operation: %v, want ErrBindingMismatch", err)
	}
	if n := len(f.audit.events(t, EventRequested)); n != 1 {
		t.Fatalf("%d approval.requested events, want 1", n)
	}
	if _, err := f.svc.ByOperation(context.Background(), "op_missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ByOperation(missing) = %v", err)
	}
}

func TestDecideCLI(t *testing.T) {
	t.Parallel()
	type step struct {
		who, outcome, reason string
		wantErr              error
		wantFinal            bool
	}
	tests := []struct {
		name      string
		mut       func(*Request)
		steps     []step
		wantState string
		wantCodes []string // approval.rejected codes
	}{
		{"approve", nil, []step{{"alice", OutcomeApprove, "", nil, true}}, StateApproved, nil},
		{"deny is final at once", func(r *Request) { r.Quorum = 2 },
			[]step{{"alice", OutcomeDeny, "wrong TLD for marketing", nil, true}}, StateDenied, nil},
		{"quorum of two", func(r *Request) { r.Quorum = 2 }, []step{
			{"alice", OutcomeApprove, "", nil, false},
			{"bob", OutcomeApprove, "", nil, true},
		}, StateApproved, nil},
		{"quorum: same approver twice", func(r *Request) { r.Quorum = 2 }, []step{
			{"alice", OutcomeApprove, "", nil, false},
			{"alice", OutcomeApprove, "", ErrDuplicateVote, false},
		}, StatePending, []string{"duplicate_vote"}},
		{"owner may not approve", nil, []step{{"dave", OutcomeApprove, "", ErrSelfApproval, false}}, StatePending, []string{"self_approval"}},
		{"owner may not deny either", nil, []step{{"dave", OutcomeDeny, "no", ErrSelfApproval, false}}, StatePending, []string{"self_approval"}},
		{"agent's namesake may not approve", func(r *Request) { r.Agent = "bob"; r.Owner = "" },
			[]step{{"bob", OutcomeApprove, "", ErrSelfApproval, false}}, StatePending, []string{"self_approval"}},
		{"non-approver", nil, []step{{"mallory", OutcomeApprove, "", ErrNotApprover, false}}, StatePending, []string{"not_approver"}},
		{"policy limit", func(r *Request) { r.AmountMicros = 250_000_000 }, []step{
			{"alice", OutcomeApprove, "", &NotAllowedError{}, false},
			{"carol", OutcomeApprove, "", nil, true},
		}, StateApproved, []string{"not_allowed"}},
		{"second vote after decision", nil, []step{
			{"alice", OutcomeApprove, "", nil, true},
			{"bob", OutcomeDeny, "late", ErrAlreadyDecided, false},
		}, StateApproved, []string{"already_decided"}},
		{"bad outcome", nil, []step{{"alice", "maybe", "", ErrInvalidInput, false}}, StatePending, []string{"invalid_input"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			r := f.request(tt.mut)
			for i, st := range tt.steps {
				out, err := f.svc.Decide(context.Background(), VoteInput{RequestID: r.ID, ApproverName: st.who, Via: ViaCLI, Outcome: st.outcome, Reason: st.reason})
				var na *NotAllowedError
				switch {
				case st.wantErr == nil && err != nil:
					t.Fatalf("step %d: %v", i, err)
				case st.wantErr == nil:
					if out.Final != st.wantFinal {
						t.Fatalf("step %d: final = %v, want %v", i, out.Final, st.wantFinal)
					}
				case errors.As(st.wantErr, &na):
					if !errors.As(err, &na) || na.Reason == "" {
						t.Fatalf("step %d: err = %v, want NotAllowedError with a reason", i, err)
					}
				case !errors.Is(err, st.wantErr):
					t.Fatalf("step %d: err = %v, want %v", i, err, st.wantErr)
				}
			}
			got := f.get(r.ID)
			if got.State != tt.wantState {
				t.Fatalf("state %s, want %s", got.State, tt.wantState)
			}
			if codes := f.audit.codes(t, EventRejected); strings.Join(codes, ",") != strings.Join(tt.wantCodes, ",") {
				t.Fatalf("rejections audited %v, want %v", codes, tt.wantCodes)
			}
			if tt.wantState == StatePending {
				f.noDecision()
				if n := len(f.audit.events(t, EventDecided)); n != 0 {
					t.Fatalf("%d decisions audited", n)
				}
				return
			}
			d := f.mustDecided(tt.wantState)
			if d.ID != r.ID || d.DecidedAt.IsZero() {
				t.Fatalf("OnDecided got %+v", d)
			}
			f.noDecision() // exactly once
			if n := len(f.audit.events(t, EventDecided)); n != 1 {
				t.Fatalf("%d approval.decided events, want 1", n)
			}
		})
	}
}

func TestDecideRecordsVotesAndAudit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.request(func(r *Request) { r.Quorum = 2 })
	f.clock.Advance(time.Minute)
	out, err := f.svc.Decide(context.Background(), VoteInput{RequestID: r.ID, ApproverName: "alice", Via: ViaCLI, Outcome: OutcomeApprove})
	if err != nil {
		t.Fatal(err)
	}
	if out.Final || out.Approvals != 1 || out.Needed != 2 || len(out.Request.Votes) != 1 {
		t.Fatalf("outcome %+v", out)
	}
	v := out.Request.Votes[0]
	if v.Approver != "alice" || v.SlackUserID != "U0ALICE" || v.Via != ViaCLI || !v.At.Equal(f.clock.Now()) {
		t.Fatalf("vote %+v", v)
	}
	ev := f.audit.events(t, EventVoted)
	if len(ev) != 1 || ev[0].Actor != "cli:alice" || ev[0].OperationID != r.OperationID || ev[0].Data["approvals"] != float64(1) || ev[0].Data["final"] != false {
		t.Fatalf("vote audit %+v", ev)
	}
	if _, err := f.svc.Decide(context.Background(), VoteInput{RequestID: r.ID, SlackUserID: "U0CAROL", ApproverName: "carol", Via: ViaSlack, Outcome: OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	got := f.mustDecided(StateApproved)
	if got.DecidedReason != "approved by alice, carol" || got.Approvals() != 2 {
		t.Fatalf("decided %+v", got)
	}
	if ev := f.audit.events(t, EventDecided); len(ev) != 1 || ev[0].Actor != "slack:U0CAROL" || ev[0].Data["state"] != StateApproved {
		t.Fatalf("decision audit %+v", ev)
	}
	// A Slack id and a name that disagree do not identify anyone.
	r2 := f.request(nil)
	_, err = f.svc.Decide(context.Background(), VoteInput{RequestID: r2.ID, SlackUserID: "U0CAROL", ApproverName: "alice", Via: ViaSlack, Outcome: OutcomeApprove})
	if !errors.Is(err, ErrNotApprover) {
		t.Fatalf("mismatched identity: %v", err)
	}
}

func TestDecideAuthorizerErrorFailsClosed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *Options, _ *fixture) {
		o.Authorizer = func(context.Context, Approver, Request, string) (bool, string, error) {
			return true, "", errors.New("rpc error: code = Unavailable desc = connection refused")
		}
	})
	r := f.request(nil)
	_, err := f.svc.Decide(context.Background(), VoteInput{RequestID: r.ID, ApproverName: "alice", Via: ViaCLI, Outcome: OutcomeApprove})
	var na *NotAllowedError
	if !errors.As(err, &na) || !strings.Contains(na.Reason, "could not be asked") || errors.Unwrap(na) == nil {
		t.Fatalf("err = %v, want NotAllowedError wrapping the policy error", err)
	}
	if got := f.get(r.ID); got.State != StatePending || len(got.Votes) != 0 {
		t.Fatalf("request changed: %+v", got)
	}
	f.noDecision()
}

func TestExpiryNeverDenies(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.request(func(r *Request) { r.Quorum = 2 })
	b := f.request(func(r *Request) { r.ExpiresAt = f.clock.Now().Add(2 * time.Hour) })
	if _, err := f.svc.Decide(context.Background(), VoteInput{RequestID: a.ID, ApproverName: "alice", Via: ViaCLI, Outcome: OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	if got, err := f.svc.ExpireDue(context.Background()); err != nil || len(got) != 0 {
		t.Fatalf("ExpireDue before expiry = %v, %v", got, err)
	}
	f.clock.Advance(30 * time.Minute)
	got, err := f.svc.ExpireDue(context.Background())
	if err != nil || len(got) != 1 || got[0].ID != a.ID || got[0].State != StateExpired {
		t.Fatalf("ExpireDue = %+v, %v", got, err)
	}
	if !strings.Contains(got[0].DecidedReason, "1 of 2 approvals") {
		t.Errorf("reason %q", got[0].DecidedReason)
	}
	select {
	case e := <-f.expired:
		if e.ID != a.ID || e.State != StateExpired {
			t.Fatalf("OnExpired(%+v)", e)
		}
	default:
		t.Fatal("OnExpired did not fire")
	}
	f.noDecision()
	if again, _ := f.svc.ExpireDue(context.Background()); len(again) != 0 {
		t.Fatalf("expired twice: %+v", again)
	}
	// A vote after expiry is refused as expired, and b is untouched.
	_, err = f.svc.Decide(context.Background(), VoteInput{RequestID: a.ID, ApproverName: "bob", Via: ViaCLI, Outcome: OutcomeApprove})
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("vote after expiry: %v", err)
	}
	if f.get(b.ID).State != StatePending {
		t.Fatal("unexpired request changed")
	}
	if ev := f.audit.events(t, EventExpired); len(ev) != 1 || ev[0].Actor != "system" {
		t.Fatalf("expiry audit %+v", ev)
	}
	if n := len(f.audit.events(t, EventDecided)); n != 0 {
		t.Fatalf("an expiry was audited as a decision")
	}
}

func TestDecideOnDueRequestExpiresIt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.request(nil)
	f.clock.Advance(31 * time.Minute) // Run has not expired it yet
	_, err := f.svc.Decide(context.Background(), VoteInput{RequestID: r.ID, ApproverName: "alice", Via: ViaCLI, Outcome: OutcomeApprove})
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
	if got := f.get(r.ID); got.State != StateExpired || len(got.Votes) != 0 {
		t.Fatalf("state %s votes %d, want expired with no votes", got.State, len(got.Votes))
	}
	if e := <-f.expired; e.ID != r.ID {
		t.Fatal("OnExpired missing")
	}
	f.noDecision()
	if codes := f.audit.codes(t, EventRejected); strings.Join(codes, ",") != "expired" {
		t.Fatalf("rejections %v", codes)
	}
}

func TestConsume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	approved := func(f *fixture) Request {
		r := f.request(nil)
		if _, err := f.svc.Decide(ctx, VoteInput{RequestID: r.ID, ApproverName: "alice", Via: ViaCLI, Outcome: OutcomeApprove}); err != nil {
			t.Fatal(err)
		}
		return f.get(r.ID)
	}
	tests := []struct {
		name   string
		setup  func(f *fixture) Request
		hash   func(r Request) string
		amount int64
		cur    string
		want   []error
	}{
		{"exact", approved, nil, 12_200_000, "USD", nil},
		{"cheaper", approved, nil, 11_000_000, "USD", nil},
		{"binding mismatch", approved, func(Request) string { return argsHash("changed args") }, 12_200_000, "USD", []error{ErrBindingMismatch}},
		{"amount above max", approved, nil, 12_200_001, "USD", []error{ErrBindingMismatch, ErrAmountExceeded}},
		{"other currency", approved, nil, 12_200_000, "EUR", []error{ErrBindingMismatch}},
		{"pending", func(f *fixture) Request { return f.request(nil) }, nil, 12_200_000, "USD", []error{ErrNotApproved}},
		{"denied", func(f *fixture) Request {
			r := f.request(nil)
			if _, err := f.svc.Decide(ctx, VoteInput{RequestID: r.ID, ApproverName: "bob", Via: ViaCLI, Outcome: OutcomeDeny, Reason: "no"}); err != nil {
				t.Fatal(err)
			}
			return r
		}, nil, 12_200_000, "USD", []error{ErrNotApproved}},
		{"missing", func(f *fixture) Request { return Request{ID: "apr_missing", ArgsHash: "x"} }, nil, 1, "USD", []error{ErrNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			r := tt.setup(f)
			hash := r.ArgsHash
			if tt.hash != nil {
				hash = tt.hash(r)
			}
			err := f.svc.Consume(ctx, r.ID, hash, tt.amount, tt.cur)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if got := f.get(r.ID); !got.Consumed || got.ConsumedAt.IsZero() {
					t.Fatal("not marked consumed")
				}
				if ev := f.audit.events(t, EventConsumed); len(ev) != 1 || ev[0].OperationID != r.OperationID {
					t.Fatalf("consume audit %+v", ev)
				}
				// Single use: a second execution is refused.
				if err := f.svc.Consume(ctx, r.ID, hash, tt.amount, tt.cur); !errors.Is(err, ErrConsumed) {
					t.Fatalf("second consume: %v, want ErrConsumed", err)
				}
				if codes := f.audit.codes(t, EventConsumeRejected); strings.Join(codes, ",") != "consumed" {
					t.Fatalf("refusals audited %v", codes)
				}
				return
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Fatalf("err = %v, want %v", err, w)
				}
			}
			if got, gerr := f.svc.Get(ctx, r.ID); gerr == nil && got.Consumed {
				t.Fatal("refused consume marked the approval used")
			}
			if n := len(f.audit.events(t, EventConsumeRejected)); n != 1 {
				t.Fatalf("%d refusals audited, want 1", n)
			}
		})
	}
}

func TestCancelAndFinish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	r := f.request(nil)
	if err := f.svc.Cancel(ctx, r.ID, "agent web-bot frozen by alice", "cli:alice"); err != nil {
		t.Fatal(err)
	}
	got := f.get(r.ID)
	if got.State != StateCancelled || got.DecidedReason != "agent web-bot frozen by alice" {
		t.Fatalf("%+v", got)
	}
	if err := f.svc.Cancel(ctx, r.ID, "again", "x"); !errors.Is(err, ErrCancelled) {
		t.Fatalf("second cancel: %v", err)
	}
	if _, err := f.svc.Decide(ctx, VoteInput{RequestID: r.ID, ApproverName: "alice", Via: ViaCLI, Outcome: OutcomeApprove}); !errors.Is(err, ErrCancelled) {
		t.Fatalf("vote on cancelled: %v", err)
	}
	if ev := f.audit.events(t, EventCancelled); len(ev) != 1 || ev[0].Actor != "cli:alice" {
		t.Fatalf("cancel audit %+v", ev)
	}
	f.noDecision()
	// Deliveries never hand a cancellation to OnDecided/OnExpired.
	f.svc.deliverDue(ctx)
	f.noDecision()

	due := f.request(nil)
	f.clock.Advance(time.Hour)
	if err := f.svc.Cancel(ctx, due.ID, "freeze", "system"); !errors.Is(err, ErrExpired) {
		t.Fatalf("cancel after expiry: %v, want ErrExpired", err)
	}
	if f.get(due.ID).State != StateExpired {
		t.Fatal("due request not expired")
	}

	if err := f.svc.Finish(ctx, r.ID, "registered example.dev until 2027-11-22"); err != nil {
		t.Fatal(err)
	}
	if f.get(r.ID).ResultText != "registered example.dev until 2027-11-22" {
		t.Fatal("result not stored")
	}
	if err := f.svc.Finish(ctx, "apr_missing", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Finish(missing) = %v", err)
	}
}

func TestAuditFailureFailsClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	f.audit.fail.Store(true)
	if _, err := f.svc.Request(ctx, domainRequest(f.clock.Now())); err == nil {
		t.Fatal("request persisted without its audit event")
	}
	if all, _ := f.svc.List(ctx); len(all) != 0 {
		t.Fatalf("%d requests stored without audit", len(all))
	}
	f.audit.fail.Store(false)
	r := f.request(nil)
	f.audit.fail.Store(true)
	if _, err := f.svc.Decide(ctx, VoteInput{RequestID: r.ID, ApproverName: "alice", Via: ViaCLI, Outcome: OutcomeApprove}); err == nil {
		t.Fatal("vote recorded without its audit event")
	}
	if got := f.get(r.ID); got.State != StatePending || len(got.Votes) != 0 {
		t.Fatalf("vote kept after audit failure: %+v", got)
	}
	f.noDecision()
	// A refusal whose audit fails is still a refusal.
	_, err := f.svc.Decide(ctx, VoteInput{RequestID: r.ID, ApproverName: "mallory", Via: ViaCLI, Outcome: OutcomeApprove})
	if !errors.Is(err, ErrNotApprover) || !strings.Contains(err.Error(), "audit rejection") {
		t.Fatalf("err = %v", err)
	}
}

func TestListAndApproverForOSUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	a := f.request(nil)
	f.clock.Advance(time.Second)
	b := f.request(nil)
	if _, err := f.svc.Decide(ctx, VoteInput{RequestID: a.ID, ApproverName: "alice", Via: ViaCLI, Outcome: OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	all, err := f.svc.List(ctx)
	if err != nil || len(all) != 2 || all[0].ID != b.ID || all[1].ID != a.ID || len(all[1].Votes) != 1 {
		t.Fatalf("List() = %v, %v", all, err)
	}
	pending, err := f.svc.List(ctx, StatePending)
	if err != nil || len(pending) != 1 || pending[0].ID != b.ID {
		t.Fatalf("List(pending) = %v, %v", pending, err)
	}
	if _, err := f.svc.List(ctx, "open"); !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), "states are pending, approved") {
		t.Fatalf("List(open) = %v", err)
	}
	for user, want := range map[string]string{"alice": "alice", "cjones": "carol", "bob": "bob", "carol": "", "mallory": ""} {
		got, ok := f.svc.ApproverForOSUser(user)
		if (want == "") == ok || got.Name != want {
			t.Errorf("ApproverForOSUser(%q) = %q, %v; want %q", user, got.Name, ok, want)
		}
	}
}

// TestDecisionFromAnotherProcess: the CLI (no hooks) decides in its own process;
// the server's Run hands the decision to OnDecided exactly once.
func TestDecisionFromAnotherProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	server := newFixture(t)
	r := server.request(nil)
	cliDB := openHandle(t, server.path)
	cli, err := NewService(cliDB, Options{Approvers: testApprovers, Authorizer: policyAuthorizer(nil), Audit: (&auditLog{db: cliDB}).fn,
		Clock: server.clock.Now, Logger: server.svc.log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Decide(ctx, VoteInput{RequestID: r.ID, ApproverName: "alice", Via: ViaCLI, Outcome: OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	server.noDecision()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- server.svc.Run(runCtx) }()
	got := server.mustDecided(StateApproved)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.ID != r.ID || got.Votes[0].Via != ViaCLI {
		t.Fatalf("delivered %+v", got)
	}
	server.svc.deliverDue(ctx)
	server.noDecision()
}

// TestConcurrentVotes: three approvers vote at once from two processes (two
// handles on one file) on a quorum-2 request: exactly two votes count, the
// decision is made once, and the late vote is refused.
func TestConcurrentVotes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	other, err := NewService(openHandle(t, f.path), Options{Approvers: testApprovers, Authorizer: policyAuthorizer(nil),
		Audit: f.audit.fn, Clock: f.clock.Now, Logger: f.svc.log})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		r := f.request(func(r *Request) { r.Quorum = 2 })
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for i, who := range []string{"alice", "bob", "carol"} {
			svc := f.svc
			if i%2 == 1 {
				svc = other
			}
			wg.Go(func() {
				_, err := svc.Decide(ctx, VoteInput{RequestID: r.ID, ApproverName: who, Via: ViaCLI, Outcome: OutcomeApprove})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		var refused int
		for err := range errs {
			if err != nil {
				if !errors.Is(err, ErrAlreadyDecided) {
					t.Fatalf("unexpected refusal: %v", err)
				}
				refused++
			}
		}
		got := f.get(r.ID)
		if refused != 1 || got.State != StateApproved || len(got.Votes) != 2 {
			t.Fatalf("refused %d, state %s, votes %d", refused, got.State, len(got.Votes))
		}
	}
	// Decisions completed by the other process reach this one's hook through Run's delivery.
	f.svc.deliverDue(ctx)
	for range 5 {
		f.mustDecided(StateApproved)
	}
	f.noDecision()
}
