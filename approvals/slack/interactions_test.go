package slack

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"

	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

func TestSlackApproveClick(t *testing.T) {
	t.Parallel()
	f := newFixture(t, withSlack())
	r := f.Request(nil)
	posted := f.ref(r.ID)
	if posted.TS == "" || posted.Channel != "C0APPROVALS" {
		t.Fatalf("request not posted: %+v", posted)
	}
	posts := f.slack.byMethod("chat.postMessage")
	if len(posts) != 1 || !strings.Contains(posts[0].Form.Get("blocks"), ActionIDApprove) ||
		!strings.Contains(posts[0].Form.Get("text"), "Approval needed: Register example.dev") {
		t.Fatalf("posted %+v", posts)
	}

	rec := f.click(blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	d := f.MustDecided(approvals.StateApproved)
	if d.ID != r.ID || len(d.Votes) != 1 || d.Votes[0].Via != approvals.ViaSlack || d.Votes[0].User != "U0ALICE" {
		t.Fatalf("OnDecided(%+v)", d)
	}
	updates := f.slack.byMethod("chat.update")
	if len(updates) != 1 {
		t.Fatalf("%d chat.update calls, want 1", len(updates))
	}
	u := updates[0].Form
	if u.Get("ts") != posted.TS || u.Get("channel") != "C0APPROVALS" || strings.Contains(u.Get("blocks"), ActionIDApprove) ||
		!strings.Contains(u.Get("blocks"), "*Approved* by `alice`") {
		t.Fatalf("update = %v", u)
	}
	if ev := f.Audit.Events(t, approvals.EventDecided); len(ev) != 1 || ev[0].Actor != "slack:U0ALICE" || ev[0].Data["via"] != approvals.ViaSlack {
		t.Fatalf("decision audit %+v", ev)
	}
	if n := len(f.slack.byMethod("chat.postEphemeral")); n != 0 {
		t.Fatalf("%d ephemeral replies to a final approval", n)
	}

	// The execution result lands on the same message.
	if err := f.Svc.Finish(context.Background(), r.ID, "Registered example.dev until 2027-11-22"); err != nil {
		t.Fatal(err)
	}
	updates = f.slack.byMethod("chat.update")
	if len(updates) != 2 || !strings.Contains(updates[1].Form.Get("blocks"), "Registered example.dev until 2027-11-22") {
		t.Fatalf("result not shown: %d updates", len(updates))
	}
}

func TestSlackDenyViaModal(t *testing.T) {
	t.Parallel()
	f := newFixture(t, withSlack())
	r := f.Request(nil)

	rec := f.click(blockActionPayload("U0BOB", ActionIDDeny, r.ID))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	views := f.slack.byMethod("views.open")
	if len(views) != 1 {
		t.Fatalf("%d views.open calls", len(views))
	}
	view, _ := views[0].JSON["view"].(map[string]any)
	if !strings.HasPrefix(views[0].JSON["trigger_id"].(string), "13345224609.738474920.") || view["callback_id"] != DenyModalCallbackID || view["private_metadata"] != r.ID {
		t.Fatalf("modal = %v", views[0].JSON)
	}
	f.NoDecision()
	if f.Get(r.ID).State != approvals.StatePending {
		t.Fatal("the deny button alone decided")
	}

	// An empty reason keeps the modal open with an error.
	rec = f.click(viewSubmissionPayload("U0BOB", r.ID, "  "))
	var resp map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp["response_action"] != "errors" {
		t.Fatalf("empty reason: %d %s", rec.Code, rec.Body)
	}
	f.NoDecision()

	rec = f.click(viewSubmissionPayload("U0BOB", r.ID, "example.dev is taken by legal; use example.app"))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Fatalf("submission: %d %q (an empty 200 closes the modal)", rec.Code, rec.Body)
	}
	d := f.MustDecided(approvals.StateDenied)
	if d.DecidedReason != "example.dev is taken by legal; use example.app" {
		t.Fatalf("reason %q", d.DecidedReason)
	}
	updates := f.slack.byMethod("chat.update")
	if len(updates) != 1 || !strings.Contains(updates[0].Form.Get("blocks"), "*Denied* by `bob`") {
		t.Fatalf("message not updated to denied")
	}

	// The owner's deny click is refused before a modal opens.
	r2 := f.Request(nil)
	f.click(blockActionPayload("U0DAVE", ActionIDDeny, r2.ID))
	if got := f.slack.lastEphemeral(t); got != ReplySelfApproval {
		t.Fatalf("ephemeral %q", got)
	}
	if n := len(f.slack.byMethod("views.open")); n != 1 {
		t.Fatalf("modal opened for the owner")
	}
	// A submission from someone who may not decide is answered in the modal.
	rec = f.click(viewSubmissionPayload("U0EVE", r2.ID, "nope"))
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp["response_action"] != "errors" ||
		!strings.Contains(rec.Body.String(), "not a tollgate approver") {
		t.Fatalf("non-approver submission: %s", rec.Body)
	}
	f.NoDecision()
}

// TestSlackRejections: each bad click is refused, audited, and decides nothing.
func TestSlackRejections(t *testing.T) {
	t.Parallel()
	type want struct {
		status    int
		ephemeral string // fixed reply, "" = none
		slackCode string // slack.rejected code
		voteCode  string // approval.rejected code
		state     string
	}
	tests := []struct {
		name string
		mut  func(*approvals.Request)
		run  func(f *fixture, r approvals.Request) *httptest.ResponseRecorder
		want want
	}{
		{"forged signature", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			body := signedBody(t, blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			rec := httptest.NewRecorder()
			f.ch.Handler().ServeHTTP(rec, interactionRequest(body, ts, sign("not-the-secret", ts, body)))
			return rec
		}, want{status: 401, slackCode: "bad_signature", state: approvals.StatePending}},
		{"tampered body", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			body := signedBody(t, blockActionPayload("U0EVE", ActionIDApprove, r.ID))
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			sig := sign(testSecret, ts, body)
			forged := strings.Replace(body, "U0EVE", "U0ALICE", 1)
			rec := httptest.NewRecorder()
			f.ch.Handler().ServeHTTP(rec, interactionRequest(forged, ts, sig))
			return rec
		}, want{status: 401, slackCode: "bad_signature", state: approvals.StatePending}},
		{"stale timestamp", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			body := signedBody(t, blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
			ts := strconv.FormatInt(time.Now().Add(-6*time.Minute).Unix(), 10)
			rec := httptest.NewRecorder()
			f.ch.Handler().ServeHTTP(rec, interactionRequest(body, ts, sign(testSecret, ts, body)))
			return rec
		}, want{status: 401, slackCode: "stale_timestamp", state: approvals.StatePending}},
		{"missing headers", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			rec := httptest.NewRecorder()
			f.ch.Handler().ServeHTTP(rec, interactionRequest(signedBody(t, blockActionPayload("U0ALICE", ActionIDApprove, r.ID)), "", ""))
			return rec
		}, want{status: 401, slackCode: "missing_headers", state: approvals.StatePending}},
		{"replayed payload", func(r *approvals.Request) { r.Quorum = 2 }, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			body := signedBody(t, blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			sig := sign(testSecret, ts, body)
			first := httptest.NewRecorder()
			f.ch.Handler().ServeHTTP(first, interactionRequest(body, ts, sig))
			if first.Code != 200 {
				t.Errorf("first delivery: %d", first.Code)
			}
			rec := httptest.NewRecorder()
			f.ch.Handler().ServeHTTP(rec, interactionRequest(body, ts, sig))
			return rec
		}, want{status: 401, slackCode: "replayed", ephemeral: "Your approval is recorded: 1 of 2. Another approver has to approve before it runs.", state: approvals.StatePending}},
		{"non-approver", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			return f.click(blockActionPayload("U0EVE", ActionIDApprove, r.ID))
		}, want{status: 200, ephemeral: ReplyNotApprover, voteCode: "not_approver", state: approvals.StatePending}},
		{"owner approving own agent", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			return f.click(blockActionPayload("U0DAVE", ActionIDApprove, r.ID))
		}, want{status: 200, ephemeral: ReplySelfApproval, voteCode: "self_approval", state: approvals.StatePending}},
		{"policy refuses", func(r *approvals.Request) { r.AmountMicros = 250_000_000 }, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			return f.click(blockActionPayload("U0BOB", ActionIDApprove, r.ID))
		}, want{status: 200, ephemeral: ReplyNotAllowed + "amounts above 100.00 USD need a finance_approver", voteCode: "not_allowed", state: approvals.StatePending}},
		{"double click", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			if rec := f.click(blockActionPayload("U0ALICE", ActionIDApprove, r.ID)); rec.Code != 200 {
				t.Errorf("first click: %d", rec.Code)
			}
			f.MustDecided(approvals.StateApproved)
			return f.click(blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
		}, want{status: 200, ephemeral: ReplyAlreadyDecided, voteCode: "already_decided", state: approvals.StateApproved}},
		{"approve after expiry", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			f.Clock.Advance(31 * time.Minute)
			return f.click(blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
		}, want{status: 200, ephemeral: ReplyExpired, voteCode: "expired", state: approvals.StateExpired}},
		{"quorum: same approver twice", func(r *approvals.Request) { r.Quorum = 2 }, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			f.click(blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
			return f.click(blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
		}, want{status: 200, ephemeral: ReplyDuplicateVote, voteCode: "duplicate_vote", state: approvals.StatePending}},
		{"click on cancelled", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			if err := f.Svc.Cancel(context.Background(), r.ID, "agent web-bot frozen", "cli:alice"); err != nil {
				t.Error(err)
			}
			return f.click(blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
		}, want{status: 200, ephemeral: ReplyCancelled, voteCode: "cancelled", state: approvals.StateCancelled}},
		{"unknown request", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			return f.click(blockActionPayload("U0ALICE", ActionIDApprove, "apr_doesnotexist"))
		}, want{status: 200, ephemeral: ReplyNotFound, voteCode: "not_found", state: approvals.StatePending}},
		{"unknown action id", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			return f.click(blockActionPayload("U0ALICE", "tollgate_approve_all", r.ID))
		}, want{status: 400, slackCode: "bad_interaction", state: approvals.StatePending}},
		{"two actions", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			p := blockActionPayload("U0ALICE", ActionIDApprove, r.ID)
			a := p["actions"].([]any)
			p["actions"] = append(a, a[0])
			return f.click(p)
		}, want{status: 400, slackCode: "bad_interaction", state: approvals.StatePending}},
		{"button value not an id", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			return f.click(blockActionPayload("U0ALICE", ActionIDApprove, "'; DROP TABLE approval_requests; --"))
		}, want{status: 400, slackCode: "bad_interaction", state: approvals.StatePending}},
		{"no payload field", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			body := "foo=bar"
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			rec := httptest.NewRecorder()
			f.ch.Handler().ServeHTTP(rec, interactionRequest(body, ts, sign(testSecret, ts, body)))
			return rec
		}, want{status: 400, slackCode: "bad_payload", state: approvals.StatePending}},
		{"unsupported type", nil, func(f *fixture, r approvals.Request) *httptest.ResponseRecorder {
			return f.click(map[string]any{"type": "shortcut", "callback_id": "x", "user": slackUser("U0ALICE")})
		}, want{status: 400, slackCode: "bad_interaction", state: approvals.StatePending}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, withSlack())
			r := f.Request(tt.mut)
			rec := tt.run(f, r)
			if rec.Code != tt.want.status {
				t.Fatalf("status %d, want %d (%s)", rec.Code, tt.want.status, rec.Body)
			}
			got := f.Get(r.ID)
			if got.State != tt.want.state {
				t.Fatalf("state %s, want %s", got.State, tt.want.state)
			}
			if tt.want.state == approvals.StatePending || tt.want.state == approvals.StateCancelled || tt.want.state == approvals.StateExpired {
				f.NoDecision()
			}
			if tt.want.state == approvals.StatePending && tt.name != "replayed payload" && tt.name != "quorum: same approver twice" && len(got.Votes) != 0 {
				t.Fatalf("votes recorded: %+v", got.Votes)
			}
			if tt.want.ephemeral != "" {
				if e := f.slack.lastEphemeral(t); e != tt.want.ephemeral {
					t.Fatalf("ephemeral %q, want %q", e, tt.want.ephemeral)
				}
			}
			if tt.want.slackCode != "" {
				if codes := f.Audit.Codes(t, EventRejected); len(codes) != 1 || codes[0] != tt.want.slackCode {
					t.Fatalf("slack.rejected codes %v, want [%s]", codes, tt.want.slackCode)
				}
			}
			if tt.want.voteCode != "" {
				codes := f.Audit.Codes(t, approvals.EventRejected)
				if len(codes) == 0 || codes[len(codes)-1] != tt.want.voteCode {
					t.Fatalf("approval.rejected codes %v, want …%s", codes, tt.want.voteCode)
				}
			}
			// Nothing leaks the signing secret.
			for _, e := range f.Audit.Events(t) {
				b, _ := json.Marshal(e)
				if strings.Contains(string(b), testSecret) {
					t.Fatalf("audit event carries the signing secret: %s", b)
				}
			}
		})
	}
}

func TestInteractionHandlerRefusesWithoutSecretAndNonPost(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(_ *approvals.Options, f *fixture) { f.secret = "" })
	r := f.Request(nil)
	rec := f.click(blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("no secret: %d", rec.Code)
	}
	if codes := f.Audit.Codes(t, EventRejected); len(codes) != 1 || codes[0] != "not_configured" {
		t.Fatalf("codes %v", codes)
	}
	rec = httptest.NewRecorder()
	f.ch.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/slack/interactions", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "POST" {
		t.Fatalf("GET: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	big := strings.NewReader("payload=" + strings.Repeat("a", maxInteractionBody+1))
	f.ch.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/slack/interactions", big))
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", rec.Code)
	}
	if f.Get(r.ID).State != approvals.StatePending {
		t.Fatal("state changed")
	}
}

func TestSlackQuorumProgress(t *testing.T) {
	t.Parallel()
	f := newFixture(t, withSlack())
	r := f.Request(func(r *approvals.Request) { r.Quorum = 2 })
	f.click(blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
	f.NoDecision()
	if e := f.slack.lastEphemeral(t); !strings.Contains(e, "1 of 2") {
		t.Fatalf("ephemeral %q", e)
	}
	updates := f.slack.byMethod("chat.update")
	if len(updates) != 1 || !strings.Contains(updates[0].Form.Get("blocks"), "1 of 2") || !strings.Contains(updates[0].Form.Get("blocks"), ActionIDApprove) {
		t.Fatalf("progress not shown with live buttons")
	}
	f.click(blockActionPayload("U0CAROL", ActionIDApprove, r.ID))
	d := f.MustDecided(approvals.StateApproved)
	if d.Approvals() != 2 {
		t.Fatalf("approvals %d", d.Approvals())
	}
	updates = f.slack.byMethod("chat.update")
	if last := updates[len(updates)-1].Form.Get("blocks"); strings.Contains(last, ActionIDApprove) || !strings.Contains(last, "*Approved* by `alice`, `carol`") {
		t.Fatalf("final message: %s", last)
	}
}

func TestSlackFreezeButton(t *testing.T) {
	t.Parallel()
	f := newFixture(t, withSlack())
	r := f.Request(nil)
	f.click(blockActionPayload("U0EVE", ActionIDFreeze, r.ID))
	if e := f.slack.lastEphemeral(t); e != ReplyNotApprover {
		t.Fatalf("non-approver freeze: %q", e)
	}
	select {
	case got := <-f.Frozen:
		t.Fatalf("froze %s for a non-approver", got)
	default:
	}
	// The owner may pull the kill switch on their own agent when the policy allows it.
	f.click(blockActionPayload("U0DAVE", ActionIDFreeze, r.ID))
	if got := <-f.Frozen; got != "web-bot by dave via slack" {
		t.Fatalf("OnFreeze(%s)", got)
	}
	if e := f.slack.lastEphemeral(t); !strings.Contains(e, "Agent `web-bot` is frozen") {
		t.Fatalf("reply %q", e)
	}
	if ev := f.Audit.Events(t, approvals.EventFreezeRequested); len(ev) != 1 || ev[0].Data["agent"] != "web-bot" || ev[0].Actor != "slack:U0DAVE" {
		t.Fatalf("freeze audit %+v", ev)
	}

	off := newFixture(t, withSlack(), func(o *approvals.Options, _ *fixture) { o.OnFreeze = nil })
	r2 := off.Request(nil)
	off.click(blockActionPayload("U0ALICE", ActionIDFreeze, r2.ID))
	if e := off.slack.lastEphemeral(t); e != ReplyFreezeOff {
		t.Fatalf("reply %q", e)
	}
	if codes := off.Audit.Codes(t, approvals.EventRejected); len(codes) != 1 || codes[0] != "freeze_unavailable" {
		t.Fatalf("codes %v", codes)
	}
}

// TestSlackReviewInConsole: with console links on, pending messages carry an
// interactive Review in console button (never a link in the message); a
// signed click by an approver gets a one-time link bound to that approver in
// an ephemeral reply; anyone else gets the fixed refusal and no link.
func TestSlackReviewInConsole(t *testing.T) {
	t.Parallel()
	minted := make(chan string, 4)
	f := newFixture(t, withSlack(), withConsole(minted))
	r := f.Request(nil)
	posted := f.slack.byMethod("chat.postMessage")[0].Form.Get("blocks")
	if !strings.Contains(posted, ActionIDConsole) || strings.Contains(posted, "/console/") || strings.Contains(posted, `"url"`) {
		t.Fatalf("the message must carry the button and no link: %s", posted)
	}
	f.click(blockActionPayload("U0BOB", ActionIDConsole, r.ID))
	if got := <-minted; got != "bob "+r.ID+" U0BOB" {
		t.Fatalf("minted %q", got)
	}
	e := f.slack.byMethod("chat.postEphemeral")
	if len(e) != 1 || e[0].Form.Get("user") != "U0BOB" || !strings.Contains(e[0].Form.Get("text"), "<https://tollgate.example.com/console/signin?t=ONE-TIME|Review in console>") {
		t.Fatalf("ephemeral %+v", e)
	}
	f.click(blockActionPayload("U0EVE", ActionIDConsole, r.ID))
	if got := f.slack.lastEphemeral(t); got != ReplyNotApprover {
		t.Fatalf("non-approver: %q", got)
	}
	select {
	case got := <-minted:
		t.Fatalf("a link was minted for a non-approver: %s", got)
	default:
	}
	if ev := f.Audit.Events(t, EventConsoleRefused); len(ev) != 1 || ev[0].Actor != "slack:U0EVE" {
		t.Fatalf("refusal audit %+v", ev)
	}
	if r := f.Get(r.ID); len(r.Votes) != 0 || r.State != approvals.StatePending {
		t.Fatal("a console click changed the request")
	}

	// Without console links: no button, and a forged click gets the fixed reply.
	off := newFixture(t, withSlack())
	r2 := off.Request(nil)
	if strings.Contains(off.slack.byMethod("chat.postMessage")[0].Form.Get("blocks"), ActionIDConsole) {
		t.Fatal("a button without console links")
	}
	off.click(blockActionPayload("U0BOB", ActionIDConsole, r2.ID))
	if got := off.slack.lastEphemeral(t); got != ReplyConsoleOff {
		t.Fatalf("console off: %q", got)
	}
}

// TestSlackDown: posting fails, the request stays pending and is retried with
// backoff; an update that fails is retried too; expiry still applies.
func TestSlackDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, withSlack())
	f.slack.failing.Store(true)
	r := f.Request(nil)
	if r.State != approvals.StatePending || f.ref(r.ID).TS != "" {
		t.Fatalf("request after failed post: %+v", r)
	}
	var attempts int
	var next int64
	row := func() {
		if err := f.DB.QueryRowContext(context.Background(), `SELECT attempts, next_at FROM approval_posts WHERE request_id = ? AND channel = 'slack'`, r.ID).Scan(&attempts, &next); err != nil {
			t.Fatal(err)
		}
	}
	row()
	if attempts != 1 || next != f.Clock.Now().Add(time.Second).UnixNano() {
		t.Fatalf("attempts %d next %v", attempts, time.Unix(0, next))
	}
	f.Svc.Tick(ctx) // not due yet: no call
	row()
	if attempts != 1 {
		t.Fatalf("retried before the backoff: %d", attempts)
	}
	f.Clock.Advance(time.Second)
	f.Svc.Tick(ctx)
	row()
	if attempts != 2 || next != f.Clock.Now().Add(2*time.Second).UnixNano() {
		t.Fatalf("second failure: attempts %d, next in %v", attempts, time.Unix(0, next).Sub(f.Clock.Now()))
	}
	f.NoDecision()

	// Slack comes back: the next due retry posts.
	f.slack.failing.Store(false)
	f.Clock.Advance(2 * time.Second)
	f.Svc.Tick(ctx)
	if got := f.Get(r.ID); f.ref(r.ID).TS == "" || got.State != approvals.StatePending {
		t.Fatalf("not posted after recovery: %+v", got)
	}

	// An update that fails after a decision is retried too.
	f.slack.failing.Store(true)
	if _, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	f.MustDecided(approvals.StateApproved)
	f.slack.failing.Store(false)
	f.Clock.Advance(time.Second)
	f.Svc.Tick(ctx)
	if u := f.slack.byMethod("chat.update"); len(u) != 1 || !strings.Contains(u[0].Form.Get("blocks"), "*Approved*") {
		t.Fatalf("update not retried: %d", len(u))
	}

	// With the server gone entirely, a new request stays pending and still expires.
	f.slack.stop()
	r2 := f.Request(nil)
	f.Svc.Tick(ctx)
	f.Clock.Advance(31 * time.Minute)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- f.Svc.Run(runCtx) }()
	select {
	case e := <-f.Expired:
		if e.ID != r2.ID || e.State != approvals.StateExpired {
			t.Fatalf("OnExpired(%+v)", e)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Run did not expire the unposted request")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.NoDecision()
	var synced, version int64
	if err := f.DB.QueryRowContext(context.Background(), `SELECT synced, version FROM approval_posts WHERE request_id = ? AND channel = 'slack'`, r2.ID).Scan(&synced, &version); err != nil {
		t.Fatal(err)
	}
	if synced != version {
		t.Fatal("an expired, never-posted request is still queued for Slack")
	}
}

func TestSlackRateLimitBackoff(t *testing.T) {
	t.Parallel()
	f := newFixture(t, withSlack())
	f.slack.rateLimit.Store(30)
	r := f.Request(nil)
	var next int64
	if err := f.DB.QueryRowContext(context.Background(), `SELECT next_at FROM approval_posts WHERE request_id = ? AND channel = 'slack'`, r.ID).Scan(&next); err != nil {
		t.Fatal(err)
	}
	if got := time.Unix(0, next).Sub(f.Clock.Now()); got != 30*time.Second {
		t.Fatalf("retry in %v, want Slack's Retry-After of 30s", got)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNoSecretsInLogsOrAudit drives every path that logs or audits, including
// failures, and scans the output for the signing secret and the tokens.
func TestNoSecretsInLogsOrAudit(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	f := newFixture(t, withSlack(), func(o *approvals.Options, _ *fixture) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	r := f.Request(func(r *approvals.Request) { r.Quorum = 2 })
	body := signedBody(t, blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	for _, sig := range []string{sign("wrong", ts, body), sign(testSecret, ts, body), sign(testSecret, ts, body)} {
		f.ch.Handler().ServeHTTP(httptest.NewRecorder(), interactionRequest(body, ts, sig))
	}
	f.click(blockActionPayload("U0EVE", ActionIDApprove, r.ID))
	f.slack.failing.Store(true)
	f.click(blockActionPayload("U0BOB", ActionIDApprove, r.ID))
	f.Request(nil)
	f.slack.stop()
	f.Request(nil)
	_ = f.Svc.Notify(ctx, "budget team:web blocked")
	api := slackapi.New("xoxb-test-token", slackapi.OptionAPIURL(f.slack.srv.GetAPIURL()), slackapi.OptionAppLevelToken("xapp-1-test"))
	f.ch.handleSocketEvent(ctx, socketmode.New(api), interactiveEvent(t, "env-s", blockActionPayload("U0CAROL", ActionIDDeny, r.ID)))

	var audit strings.Builder
	for _, e := range f.Audit.Events(t) {
		b, _ := json.Marshal(e)
		audit.Write(b)
	}
	if !strings.Contains(logs.String(), "channel call failed") || !strings.Contains(audit.String(), "bad_signature") {
		t.Fatalf("the failure paths did not run:\n%s", logs.String())
	}
	for _, secret := range []string{testSecret, "xoxb-test-token", "xapp-1-test"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs contain %q", secret)
		}
		if strings.Contains(audit.String(), secret) {
			t.Errorf("audit contains %q", secret)
		}
	}
}
