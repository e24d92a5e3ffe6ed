package slack

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
)

// FuzzParseInteraction: any body is either a Slack interaction or a clear error.
func FuzzParseInteraction(f *testing.F) {
	f.Add(signedBody(f, blockActionPayload("U0ALICE", ActionIDApprove, "apr_abc")))
	f.Add(signedBody(f, viewSubmissionPayload("U0BOB", "apr_abc", "no")))
	f.Add("")
	f.Add("payload=")
	f.Add("payload=%7B")
	f.Add("payload=" + url.QueryEscape(`{"type":"block_actions","actions":[{"block_id":1}]}`))
	f.Add("payload=" + url.QueryEscape(`{"type":"block_actions","actions":"x","state":{"values":7}}`))
	f.Add("%zz=1&payload=2")
	f.Fuzz(func(t *testing.T, body string) {
		cb, err := parseInteraction([]byte(body))
		form, ferr := url.ParseQuery(body)
		if ferr != nil || form.Get("payload") == "" {
			if err == nil {
				t.Fatalf("accepted a body without a payload: %q", body)
			}
			return
		}
		if err != nil && !strings.Contains(err.Error(), "payload") {
			t.Fatalf("error does not say what was wrong: %v", err)
		}
		if err == nil && len(cb.ActionCallback.BlockActions)+len(cb.ActionCallback.AttachmentActions) > strings.Count(form.Get("payload"), "{") {
			t.Fatalf("more actions than objects in the payload")
		}
	})
}

// FuzzSignedInteraction sends arbitrary, correctly signed payloads through the
// whole handler. Whatever arrives, only configured approvers other than the
// owner ever get a vote recorded, and the endpoint answers 200 or 400.
func FuzzSignedInteraction(f *testing.F) {
	fx := newFixture(f, withSlack())
	target := fx.Request(func(r *approvals.Request) { r.ID = "apr_fuzztarget"; r.Quorum = 3 })
	seed := func(p map[string]any) { f.Add(signedBody(f, p)) }
	seed(blockActionPayload("U0EVE", ActionIDApprove, target.ID))
	seed(blockActionPayload("U0DAVE", ActionIDApprove, target.ID))
	seed(blockActionPayload("U0ALICE", ActionIDApprove, target.ID))
	seed(blockActionPayload("U0BOB", ActionIDDeny, target.ID))
	seed(blockActionPayload("U0CAROL", ActionIDFreeze, target.ID))
	seed(viewSubmissionPayload("U0DAVE", target.ID, "owner tries"))
	seed(map[string]any{"type": "view_submission", "user": slackUser("U0ALICE"), "view": map[string]any{"callback_id": DenyModalCallbackID, "private_metadata": target.ID, "state": nil}})
	f.Add("payload=" + url.QueryEscape(`{"type":"block_actions","user":{"id":"U0ALICE"},"actions":[{"block_id":"x","action_id":"tollgate_approve","value":"apr_fuzztarget"},{"block_id":"y"}]}`))
	f.Fuzz(func(t *testing.T, body string) {
		// Each input starts from the same state, so coverage depends on the input alone.
		for _, q := range []string{
			`DELETE FROM approval_slack_seen`,
			`DELETE FROM approval_votes WHERE request_id = 'apr_fuzztarget'`,
			`UPDATE approval_requests SET state = 'pending', decided_at = NULL, decided_reason = '' WHERE id = 'apr_fuzztarget'`,
		} {
			if _, err := fx.DB.ExecContext(context.Background(), q); err != nil {
				t.Fatal(err)
			}
		}
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req := interactionRequest(body, ts, sign(testSecret, ts, body))
		rec := httptest.NewRecorder()
		fx.ch.Handler().ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		got, err := fx.Svc.Get(context.Background(), target.ID)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, v := range got.Votes {
			if v.Approver != "alice" && v.Approver != "bob" && v.Approver != "carol" {
				t.Fatalf("vote recorded for %q", v.Approver)
			}
			if seen[v.Approver] {
				t.Fatalf("%s voted twice", v.Approver)
			}
			seen[v.Approver] = true
		}
		if got.State == approvals.StateApproved && got.Approvals() < 3 {
			t.Fatalf("approved with %d of 3 approvals", got.Approvals())
		}
	})
}
