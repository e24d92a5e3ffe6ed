package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/slack-go/slack/slacktest"

	"github.com/tollgatehq/tollgate/approvals"
	slackchan "github.com/tollgatehq/tollgate/approvals/slack"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// These tests drive approvals through the whole server: the approval message
// is posted to slacktest's Web API server, and clicks arrive as Slack sends
// them (form-encoded payload, X-Slack-Signature over the raw body,
// X-Slack-Request-Timestamp) at POST /slack/interactions on the server's real
// HTTP handler.

// ---- Slack Web API: slacktest with recording handlers ----------------------

// slacktest answers chat.postMessage but records it only for its websocket
// (RTM) clients, and has no chat.update or views.open at all, so the methods
// tollgate calls get recording handlers bound into slacktest.
type slackRecorder struct {
	mu    sync.Mutex
	calls []slackAPICall
	ts    atomic.Int64
}

// slackAPICall is one Web API call as Slack received it. Fields holds the
// form (or the JSON body of views.open) without the bot token, which is the
// only place the token may travel.
type slackAPICall struct {
	Method string
	Fields map[string]string
	// TokenInBody is the token form field, checked against the bot token.
	TokenInBody string
}

func newSlackRecorder() *slackRecorder { return &slackRecorder{} }

// bind is the slacktest.Binder installing the recording handlers.
func (r *slackRecorder) bind(c slacktest.Customize) {
	for _, m := range []string{"chat.postMessage", "chat.update", "chat.postEphemeral", "views.open"} {
		c.Handle("/"+m, r.handle(m))
	}
}

func (r *slackRecorder) handle(method string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		call := slackAPICall{Method: method, Fields: map[string]string{}}
		if strings.HasPrefix(req.Header.Get("Content-Type"), "application/json") {
			var m map[string]json.RawMessage
			_ = json.Unmarshal(body, &m)
			for k, v := range m {
				var s string
				if json.Unmarshal(v, &s) != nil {
					s = string(v)
				}
				call.Fields[k] = s
			}
		} else {
			form, _ := url.ParseQuery(string(body))
			for k := range form {
				call.Fields[k] = form.Get(k)
			}
		}
		call.TokenInBody = call.Fields["token"]
		delete(call.Fields, "token")
		r.mu.Lock()
		r.calls = append(r.calls, call)
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch method {
		case "chat.postMessage":
			ts := fmt.Sprintf("1790000000.%06d", r.ts.Add(1))
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": call.Fields["channel"], "ts": ts})
		case "chat.update":
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": call.Fields["channel"], "ts": call.Fields["ts"]})
		case "chat.postEphemeral":
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "message_ts": "1790000000.999999"})
		case "views.open":
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "view": map[string]any{"id": "V0DENY"}})
		}
	}
}

func (r *slackRecorder) byMethod(method string) []slackAPICall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slackAPICall
	for _, c := range r.calls {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

func (r *slackRecorder) all() []slackAPICall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// waitFor polls until a call of method satisfies ok and returns it.
func (r *slackRecorder) waitFor(t *testing.T, method, what string, ok func(slackAPICall) bool) slackAPICall {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		for _, c := range r.byMethod(method) {
			if ok(c) {
				return c
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, c := range r.byMethod(method) {
				seen = append(seen, blocksText(t, c))
			}
			t.Fatalf("no %s %s; seen %q", method, what, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitPost is the approval message posted for request id.
func (r *slackRecorder) waitPost(t *testing.T, requestID string) slackAPICall {
	t.Helper()
	return r.waitFor(t, "chat.postMessage", "for "+requestID, func(c slackAPICall) bool {
		return strings.Contains(c.Fields["blocks"], requestID)
	})
}

// waitUpdate is the first in-place update of the approval message that contains every want.
func (r *slackRecorder) waitUpdate(t *testing.T, want ...string) slackAPICall {
	t.Helper()
	return r.waitFor(t, "chat.update", fmt.Sprintf("containing %q", want), func(c slackAPICall) bool {
		txt := blocksText(t, c)
		for _, w := range want {
			if !strings.Contains(txt, w) {
				return false
			}
		}
		return true
	})
}

// lastEphemeral is the last reply shown to one clicking user.
func (r *slackRecorder) lastEphemeral(t *testing.T, user string) string {
	t.Helper()
	var last string
	for _, c := range r.byMethod("chat.postEphemeral") {
		if c.Fields["user"] == user {
			last = c.Fields["text"]
		}
	}
	return last
}

// blocksText is every text of a message's Block Kit blocks, one per line
// (decoded, so Slack's date markup reads as it was built).
func blocksText(t *testing.T, c slackAPICall) string {
	t.Helper()
	raw := c.Fields["blocks"]
	if raw == "" {
		return c.Fields["text"]
	}
	var blocks []any
	if err := json.Unmarshal([]byte(raw), &blocks); err != nil {
		t.Fatalf("%s blocks are not JSON: %v", c.Method, err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if s, ok := x["text"].(string); ok {
				out = append(out, s)
			}
			for _, child := range x {
				walk(child)
			}
		case []any:
			for _, child := range x {
				walk(child)
			}
		}
	}
	walk(blocks)
	return strings.Join(out, "\n")
}

// slackButton is one button of a message's actions block.
type slackButton struct{ ActionID, Value, Style string }

func messageButtons(t *testing.T, c slackAPICall) []slackButton {
	t.Helper()
	var blocks []struct {
		Type     string `json:"type"`
		Elements []struct {
			Type     string `json:"type"`
			ActionID string `json:"action_id"`
			Value    string `json:"value"`
			Style    string `json:"style"`
		} `json:"elements"`
	}
	if err := json.Unmarshal([]byte(c.Fields["blocks"]), &blocks); err != nil {
		t.Fatalf("blocks: %v", err)
	}
	var out []slackButton
	for _, b := range blocks {
		if b.Type != "actions" {
			continue
		}
		for _, el := range b.Elements {
			if el.Type == "button" {
				out = append(out, slackButton{ActionID: el.ActionID, Value: el.Value, Style: el.Style})
			}
		}
	}
	return out
}

// slackDateOf is how approval messages render a time (blocks.go slackDate).
func slackDateOf(at time.Time) string {
	return fmt.Sprintf("<!date^%d^{date_short_pretty} {time}|%s>", at.Unix(), at.UTC().Format("2006-01-02 15:04 UTC"))
}

// ---- interaction payloads, built and signed as Slack sends them ------------

var slackClickSeq atomic.Int64

func slackUserJSON(id string) map[string]any {
	return map[string]any{"id": id, "username": strings.ToLower(id), "name": strings.ToLower(id), "team_id": "T0TOLLGATE"}
}

// slackBlockAction is a button click: like Slack, every click has its own
// trigger_id and action_ts.
func slackBlockAction(userID, actionID, requestID string) map[string]any {
	n := slackClickSeq.Add(1)
	return map[string]any{
		"type":       "block_actions",
		"user":       slackUserJSON(userID),
		"api_app_id": "A0TOLLGATE",
		"token":      "verification-token-unused",
		"container": map[string]any{
			"type": "message", "message_ts": "1790000000.000001", "channel_id": "C0APPROVALS", "is_ephemeral": false,
		},
		"trigger_id":            fmt.Sprintf("13345224609.738474920.%012d", n),
		"team":                  map[string]any{"id": "T0TOLLGATE", "domain": "tollgate"},
		"enterprise":            nil,
		"is_enterprise_install": false,
		"channel":               map[string]any{"id": "C0APPROVALS", "name": "approvals"},
		"message": map[string]any{
			"type": "message", "user": "U0BOT", "ts": "1790000000.000001", "bot_id": "B0BOT", "text": "Approval needed",
		},
		"state":        map[string]any{"values": map[string]any{}},
		"response_url": "https://hooks.slack.com/actions/T0TOLLGATE/1/abc",
		"actions": []any{map[string]any{
			"action_id": actionID,
			"block_id":  slackchan.BlockActions,
			"text":      map[string]any{"type": "plain_text", "text": "Approve", "emoji": true},
			"value":     requestID,
			"type":      "button",
			"action_ts": fmt.Sprintf("1790000123.%06d", n),
		}},
	}
}

// slackViewSubmission is the deny modal's submit with a reason.
func slackViewSubmission(userID, requestID, reason string) map[string]any {
	return map[string]any{
		"type":       "view_submission",
		"team":       map[string]any{"id": "T0TOLLGATE", "domain": "tollgate"},
		"user":       slackUserJSON(userID),
		"api_app_id": "A0TOLLGATE",
		"token":      "verification-token-unused",
		"trigger_id": fmt.Sprintf("13345224609.738474921.%012d", slackClickSeq.Add(1)),
		"view": map[string]any{
			"id": "V0DENY", "team_id": "T0TOLLGATE", "type": "modal",
			"private_metadata": requestID,
			"callback_id":      slackchan.DenyModalCallbackID,
			"hash":             "156772938.1827394",
			"title":            map[string]any{"type": "plain_text", "text": "Deny request"},
			"blocks":           []any{},
			"state": map[string]any{"values": map[string]any{
				slackchan.DenyReasonBlockID: map[string]any{
					slackchan.DenyReasonActionID: map[string]any{"type": "plain_text_input", "value": reason},
				},
			}},
		},
		"response_urls":         []any{},
		"is_enterprise_install": false,
	}
}

// slackForm is the form-encoded body Slack posts: one field, payload.
func slackForm(t *testing.T, payload any) string {
	t.Helper()
	js, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return url.Values{"payload": {string(js)}}.Encode()
}

// slackSignature is Slack's v0 request signature.
func slackSignature(secret, ts, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + ts + ":" + body))
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}

// slackReply is the server's answer to an interaction.
type slackReply struct {
	Status int
	Body   string
}

// slackPost sends a raw interaction request to the server's real listener.
func slackPost(t *testing.T, baseURL, body, ts, sig string) slackReply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, baseURL+"/slack/interactions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if ts != "" {
		req.Header.Set("X-Slack-Request-Timestamp", ts)
	}
	if sig != "" {
		req.Header.Set("X-Slack-Signature", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return slackReply{Status: resp.StatusCode, Body: string(b)}
}

// slackSide is the Slack half of a test: the recorder behind the Web API and
// the server's HTTP listener that clicks arrive at.
type slackSide struct {
	rec    *slackRecorder
	url    string
	secret string
}

// newSlackEnv is a test env with Slack on, recorded, and its HTTP listener up.
func newSlackEnv(t *testing.T, opts ...envOption) (*testEnv, *slackSide) {
	t.Helper()
	rec := newSlackRecorder()
	e := newEnv(t, append([]envOption{withSlackBinders(rec.bind)}, opts...)...)
	hs := httptest.NewServer(e.srv.Handler())
	t.Cleanup(hs.Close)
	return e, &slackSide{rec: rec, url: hs.URL, secret: e.secret}
}

// click signs payload now (Slack's window is wall-clock time) and posts it.
func (s *slackSide) click(t *testing.T, payload any) slackReply {
	t.Helper()
	body := slackForm(t, payload)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	return slackPost(t, s.url, body, ts, slackSignature(s.secret, ts, body))
}

// approve clicks Approve as a Slack user and expects Slack's plain 200.
func (s *slackSide) approve(t *testing.T, user, requestID string) {
	t.Helper()
	if r := s.click(t, slackBlockAction(user, slackchan.ActionIDApprove, requestID)); r.Status != http.StatusOK {
		t.Fatalf("approve click by %s: %d %s", user, r.Status, r.Body)
	}
}

// auditEvents returns the audit events of one type (all operations).
func auditEvents(t *testing.T, e *testEnv, typ string) []map[string]any {
	t.Helper()
	var out []map[string]any
	if err := e.db.Events(context.Background(), ledger.EventQuery{}, func(ev ledger.Event) error {
		if ev.Type != typ {
			return nil
		}
		m := map[string]any{"_actor": ev.Actor, "_operation": ev.OperationID}
		_ = json.Unmarshal(ev.Data, &m)
		out = append(out, m)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// hasAuditCode reports whether an event of typ carries code (and, when
// given, names the request).
func hasAuditCode(t *testing.T, e *testEnv, typ, code, requestID string) bool {
	t.Helper()
	for _, ev := range auditEvents(t, e, typ) {
		if ev["code"] == code && (requestID == "" || ev["request_id"] == requestID) {
			return true
		}
	}
	return false
}

// requestRegistration starts a registration as web-bot and returns its
// awaiting Operation and approval request.
func requestRegistration(t *testing.T, e *testEnv, args map[string]any) (tools.OperationView, approvals.Request) {
	t.Helper()
	res := e.call(webBot, "register_domain", args)
	if res.IsError {
		t.Fatalf("register_domain: %s", text(res))
	}
	v := opView(t, res)
	e.waitState(v.OperationID, ledger.StateAwaitingApproval)
	return v, e.pendingApproval(v.OperationID)
}

// ---- tests ------------------------------------------------------------------

func TestSlackApprovalMessageThenApproveClickExecutes(t *testing.T) {
	t.Parallel()
	clock := newManualClock()
	e, sl := newSlackEnv(t, withClock(clock.Now), withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "100.00"}}
	}))

	v, r := requestRegistration(t, e, registerArgs("launch-page.dev"))
	post := sl.rec.waitPost(t, r.ID)
	if post.Fields["channel"] != "C0APPROVALS" {
		t.Fatalf("posted to %q, want the configured channel", post.Fields["channel"])
	}
	if got := post.Fields["text"]; got != "Approval needed: Register launch-page.dev for 1 year (auto-renew off) (agent web-bot, 12.18 USD)" {
		t.Errorf("notification text %q", got)
	}
	msg := blocksText(t, post)
	for _, want := range []string{
		"Approval needed: register_domain",
		"Register launch-page.dev for 1 year (auto-renew off)",
		"Domain: launch-page.dev", "Years: 1", "Auto-renew: off",
		"12.18 USD", // the live quote, the bound maximum
		reason,      // the agent's stated reason
		"allowed",   // the policy decision
		"irreversible: always needs a human",
		"team:web day — 87.82 USD left of 100.00 USD", // headroom after the hold
		slackDateOf(r.ExpiresAt) + " (in 30m)",        // expiry, on the server's clock
		"0 of 1",
		"`web-bot` (team `web`)",
		"alice", // the accountable owner is shown
		v.OperationID,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("approval message lacks %q:\n%s", want, msg)
		}
	}
	wantButtons := []slackButton{
		{slackchan.ActionIDApprove, r.ID, "primary"},
		{slackchan.ActionIDApproveMandate, r.ID, ""}, // a 12.18 USD registration may be covered by a mandate
		{slackchan.ActionIDDeny, r.ID, "danger"},
		{slackchan.ActionIDFreeze, r.ID, ""},
	}
	if got := messageButtons(t, post); !slices.Equal(got, wantButtons) {
		t.Errorf("buttons %+v, want %+v", got, wantButtons)
	}
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("registered before approval: %d", n)
	}

	clock.Advance(2 * time.Minute)
	decidedAt := clock.Now()
	sl.approve(t, "U0BOB", r.ID)

	op := e.waitState(v.OperationID, ledger.StateSucceeded)
	if op.Charged == nil || op.Charged.Micros != 12_180_000 {
		t.Fatalf("charged %+v, want 12.18 USD", op.Charged)
	}
	if regs := e.sb.Registrations(); len(regs) != 1 || regs[0].Domain != "launch-page.dev" {
		t.Fatalf("sandbox registrations %+v", regs)
	}
	assertHeld(t, e, "team:web", 0)

	// The message is updated in place: who, when, the outcome, then the result.
	final := sl.rec.waitUpdate(t, "Execution result", "Registered launch-page.dev")
	ref, err := e.srv.Approvals().PostRef(context.Background(), r.ID, slackchan.Name)
	if err != nil {
		t.Fatal(err)
	}
	posted, err := slackchan.ParseRef(ref)
	if err != nil || final.Fields["ts"] != posted.TS || final.Fields["channel"] != "C0APPROVALS" {
		t.Errorf("update targets %s/%s, want the posted message %s (%v)", final.Fields["channel"], final.Fields["ts"], ref, err)
	}
	got := blocksText(t, final)
	for _, want := range []string{"Approved: register_domain", "*Approved* by `bob` at " + slackDateOf(decidedAt), "charged 12.18 USD", "1 of 1"} {
		if !strings.Contains(got, want) {
			t.Errorf("final message lacks %q:\n%s", want, got)
		}
	}
	if b := messageButtons(t, final); len(b) != 0 {
		t.Errorf("decided message still has buttons %+v", b)
	}
	if n := len(sl.rec.byMethod("chat.postEphemeral")); n != 0 {
		t.Errorf("%d ephemeral replies to a final approval", n)
	}
	for _, ev := range auditEvents(t, e, "approval.voted") {
		if ev["_operation"] == v.OperationID && (ev["_actor"] != "slack:U0BOB" || ev["via"] != approvals.ViaSlack) {
			t.Errorf("vote audited as %v via %v, want slack:U0BOB via slack", ev["_actor"], ev["via"])
		}
	}
	requireEvents(t, e, v.OperationID, "approval.requested", "approval.voted", "approval.decided", "approval.consumed",
		"token.minted", "cloudflare.request", "token.revoked", "budget.settled")
}

func TestSlackDenyViaModalReleasesTheHold(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "100.00"}}
	}))
	v, r := requestRegistration(t, e, registerArgs("deny-me.dev"))
	sl.rec.waitPost(t, r.ID)
	assertHeld(t, e, "team:web", 12_180_000)

	// Deny opens the modal; nothing is decided yet.
	if rep := sl.click(t, slackBlockAction("U0BOB", slackchan.ActionIDDeny, r.ID)); rep.Status != http.StatusOK {
		t.Fatalf("deny click: %d %s", rep.Status, rep.Body)
	}
	views := sl.rec.byMethod("views.open")
	if len(views) != 1 {
		t.Fatalf("%d views.open calls, want the deny modal", len(views))
	}
	var view struct {
		CallbackID      string `json:"callback_id"`
		PrivateMetadata string `json:"private_metadata"`
	}
	if err := json.Unmarshal([]byte(views[0].Fields["view"]), &view); err != nil {
		t.Fatal(err)
	}
	if view.CallbackID != slackchan.DenyModalCallbackID || view.PrivateMetadata != r.ID || !strings.HasPrefix(views[0].Fields["trigger_id"], "13345224609.") {
		t.Fatalf("modal %+v trigger %q", view, views[0].Fields["trigger_id"])
	}
	if op, _ := e.db.Operation(context.Background(), v.OperationID); op.State != ledger.StateAwaitingApproval {
		t.Fatalf("the deny button alone moved the operation to %s", op.State)
	}

	// An empty reason keeps the modal open with an error.
	rep := sl.click(t, slackViewSubmission("U0BOB", r.ID, "   "))
	if rep.Status != http.StatusOK || !strings.Contains(rep.Body, `"response_action":"errors"`) {
		t.Fatalf("empty reason: %d %s", rep.Status, rep.Body)
	}
	const why = "we already own launch-page.dev; use that"
	rep = sl.click(t, slackViewSubmission("U0BOB", r.ID, why))
	if rep.Status != http.StatusOK || rep.Body != "" {
		t.Fatalf("submission: %d %q (an empty 200 closes the modal)", rep.Status, rep.Body)
	}
	op := e.waitState(v.OperationID, ledger.StateDenied)
	if op.ErrorCode != "denied_by_approver" || !strings.Contains(op.Error, why) || !strings.Contains(op.Error, "bob") {
		t.Fatalf("denial %s: %s", op.ErrorCode, op.Error)
	}
	assertHeld(t, e, "team:web", 0)
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("registered despite the denial: %d", n)
	}
	sl.rec.waitUpdate(t, "*Denied* by `bob`", why)
	// The agent reads the denial and the approver's reason.
	got := opView(t, e.call(webBot, "get_operation", map[string]any{"operation_id": v.OperationID}))
	if got.Status != "denied" || got.Approval == nil || got.Approval.State != approvals.StateDenied || got.Approval.Reason != why {
		t.Fatalf("get_operation %+v approval %+v", got, got.Approval)
	}
}

func TestSlackExpiryReleasesAndSaysExpired(t *testing.T) {
	t.Parallel()
	clock := newManualClock()
	e, sl := newSlackEnv(t, withClock(clock.Now), withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "100.00"}}
	}))
	v, r := requestRegistration(t, e, registerArgs("too-late.dev"))
	sl.rec.waitPost(t, r.ID)
	assertHeld(t, e, "team:web", 12_180_000)

	clock.Advance(31 * time.Minute)
	op := e.waitState(v.OperationID, ledger.StateExpired)
	if op.ErrorCode != "approval_expired" || !strings.Contains(op.Error, "no approver decided before") {
		t.Fatalf("expiry %s: %s", op.ErrorCode, op.Error)
	}
	assertHeld(t, e, "team:web", 0)

	res := e.call(webBot, "get_operation", map[string]any{"operation_id": v.OperationID})
	got := opView(t, res)
	if got.Status != "expired" || got.ErrorCode != "approval_expired" || got.Approval == nil || got.Approval.State != approvals.StateExpired {
		t.Fatalf("get_operation %+v approval %+v", got, got.Approval)
	}
	if strings.Contains(strings.ToLower(text(res)), "denied") {
		t.Errorf("an expiry must never read as a denial:\n%s", text(res))
	}
	upd := sl.rec.waitUpdate(t, "*Expired*")
	if strings.Contains(blocksText(t, upd), "Denied") || len(messageButtons(t, upd)) != 0 {
		t.Errorf("expired message: %s", blocksText(t, upd))
	}
	requireEvents(t, e, v.OperationID, "approval.expired", "budget.released")
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("registered without an approval: %d", n)
	}
}

// TestSlackRejections: every bad click is refused and audited, and nothing
// is executed: the sandbox sees no registration.
func TestSlackRejections(t *testing.T) {
	t.Parallel()
	type want struct {
		status    int
		ephemeral string // the fixed reply to the clicking user ("" = none)
		auditType string // slack.rejected or approval.rejected
		code      string
		state     ledger.State
		regs      int // registrations in the sandbox afterwards
	}
	tests := []struct {
		name  string
		clock bool   // run on a manual clock
		user  string // who clicks (for the ephemeral reply)
		run   func(t *testing.T, e *testEnv, sl *slackSide, clock *manualClock, v tools.OperationView, r approvals.Request) slackReply
		want  want
	}{
		{name: "forged signature", run: func(t *testing.T, e *testEnv, sl *slackSide, _ *manualClock, _ tools.OperationView, r approvals.Request) slackReply {
			body := slackForm(t, slackBlockAction("U0BOB", slackchan.ActionIDApprove, r.ID))
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			return slackPost(t, sl.url, body, ts, slackSignature("not-the-signing-secret", ts, body))
		}, want: want{status: 401, auditType: slackchan.EventRejected, code: "bad_signature", state: ledger.StateAwaitingApproval}},
		{name: "tampered body", run: func(t *testing.T, e *testEnv, sl *slackSide, _ *manualClock, _ tools.OperationView, r approvals.Request) slackReply {
			body := slackForm(t, slackBlockAction("U0EVE", slackchan.ActionIDApprove, r.ID))
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			sig := slackSignature(sl.secret, ts, body)
			return slackPost(t, sl.url, strings.Replace(body, "U0EVE", "U0BOB", 1), ts, sig)
		}, want: want{status: 401, auditType: slackchan.EventRejected, code: "bad_signature", state: ledger.StateAwaitingApproval}},
		{name: "stale timestamp", run: func(t *testing.T, e *testEnv, sl *slackSide, _ *manualClock, _ tools.OperationView, r approvals.Request) slackReply {
			body := slackForm(t, slackBlockAction("U0BOB", slackchan.ActionIDApprove, r.ID))
			ts := strconv.FormatInt(time.Now().Add(-6*time.Minute).Unix(), 10)
			return slackPost(t, sl.url, body, ts, slackSignature(sl.secret, ts, body))
		}, want: want{status: 401, auditType: slackchan.EventRejected, code: "stale_timestamp", state: ledger.StateAwaitingApproval}},
		{name: "replayed payload", run: func(t *testing.T, e *testEnv, sl *slackSide, _ *manualClock, _ tools.OperationView, r approvals.Request) slackReply {
			// A captured Deny click (it only opens the modal) sent again verbatim.
			body := slackForm(t, slackBlockAction("U0BOB", slackchan.ActionIDDeny, r.ID))
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			sig := slackSignature(sl.secret, ts, body)
			if first := slackPost(t, sl.url, body, ts, sig); first.Status != http.StatusOK {
				t.Errorf("first delivery: %d %s", first.Status, first.Body)
			}
			rep := slackPost(t, sl.url, body, ts, sig)
			if n := len(sl.rec.byMethod("views.open")); n != 1 {
				t.Errorf("the replay opened the modal again: %d views.open", n)
			}
			return rep
		}, want: want{status: 401, auditType: slackchan.EventRejected, code: "replayed", state: ledger.StateAwaitingApproval}},
		{name: "non-approver", user: "U0EVE", run: func(t *testing.T, e *testEnv, sl *slackSide, _ *manualClock, _ tools.OperationView, r approvals.Request) slackReply {
			return sl.click(t, slackBlockAction("U0EVE", slackchan.ActionIDApprove, r.ID))
		}, want: want{status: 200, ephemeral: slackchan.ReplyNotApprover, auditType: approvals.EventRejected, code: "not_approver", state: ledger.StateAwaitingApproval}},
		{name: "the agent's owner approving", user: "U0ALICE", run: func(t *testing.T, e *testEnv, sl *slackSide, _ *manualClock, _ tools.OperationView, r approvals.Request) slackReply {
			return sl.click(t, slackBlockAction("U0ALICE", slackchan.ActionIDApprove, r.ID))
		}, want: want{status: 200, ephemeral: slackchan.ReplySelfApproval, auditType: approvals.EventRejected, code: "self_approval", state: ledger.StateAwaitingApproval}},
		{name: "double click", run: func(t *testing.T, e *testEnv, sl *slackSide, _ *manualClock, v tools.OperationView, r approvals.Request) slackReply {
			sl.approve(t, "U0BOB", r.ID)
			e.waitState(v.OperationID, ledger.StateSucceeded)
			return sl.click(t, slackBlockAction("U0BOB", slackchan.ActionIDApprove, r.ID))
		}, want: want{status: 200, ephemeral: slackchan.ReplyAlreadyDecided, auditType: approvals.EventRejected, code: "already_decided", state: ledger.StateSucceeded, regs: 1}},
		{name: "approve after expiry", clock: true, run: func(t *testing.T, e *testEnv, sl *slackSide, clock *manualClock, v tools.OperationView, r approvals.Request) slackReply {
			clock.Advance(31 * time.Minute)
			e.waitState(v.OperationID, ledger.StateExpired)
			return sl.click(t, slackBlockAction("U0BOB", slackchan.ActionIDApprove, r.ID))
		}, want: want{status: 200, ephemeral: slackchan.ReplyExpired, auditType: approvals.EventRejected, code: "expired", state: ledger.StateExpired}},
		{name: "approve at the expiry, before the timer ran", clock: true, run: func(t *testing.T, e *testEnv, sl *slackSide, clock *manualClock, v tools.OperationView, r approvals.Request) slackReply {
			clock.Advance(30 * time.Minute)
			return sl.click(t, slackBlockAction("U0BOB", slackchan.ActionIDApprove, r.ID))
		}, want: want{status: 200, ephemeral: slackchan.ReplyExpired, auditType: approvals.EventRejected, code: "expired", state: ledger.StateExpired}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newManualClock()
			opts := []envOption{withConfig(func(c *Config) { c.Approvals.Wait = 0 })}
			if tc.clock {
				opts = append(opts, withClock(clock.Now))
			}
			e, sl := newSlackEnv(t, opts...)
			v, r := requestRegistration(t, e, registerArgs(fmt.Sprintf("click-case-%02d.dev", i)))
			sl.rec.waitPost(t, r.ID)

			rep := tc.run(t, e, sl, clock, v, r)
			if rep.Status != tc.want.status {
				t.Fatalf("status %d (%s), want %d", rep.Status, rep.Body, tc.want.status)
			}
			if tc.want.ephemeral != "" {
				user := tc.user
				if user == "" {
					user = "U0BOB"
				}
				if got := sl.rec.lastEphemeral(t, user); got != tc.want.ephemeral {
					t.Errorf("ephemeral reply %q, want %q", got, tc.want.ephemeral)
				}
			}
			wantReq := r.ID
			if tc.want.auditType == slackchan.EventRejected && tc.want.code != "replayed" {
				wantReq = "" // refused before the payload is read
			}
			if !hasAuditCode(t, e, tc.want.auditType, tc.want.code, wantReq) {
				t.Errorf("no %s event with code %s for %s; have %v", tc.want.auditType, tc.want.code, wantReq, auditEvents(t, e, tc.want.auditType))
			}
			op := e.waitState(v.OperationID, tc.want.state)
			if n := len(e.sb.Registrations()); n != tc.want.regs {
				t.Errorf("%d registrations, want %d (operation %s)", n, tc.want.regs, op.State)
			}
			got, err := e.srv.Approvals().Get(context.Background(), r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want.regs == 0 && got.Approvals() != 0 {
				t.Errorf("a rejected click was counted: %+v", got.Votes)
			}
		})
	}
}

// TestSlackChangedArgumentsUnderSameKey: the approval binds the exact
// arguments; a second call with the same idempotency key and other arguments
// is refused and audited, and the approval executes only what it showed.
func TestSlackChangedArgumentsUnderSameKey(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	v, r := requestRegistration(t, e, map[string]any{"domain": "bound-args.dev", "reason": reason, "idempotency_key": "launch-7"})
	post := sl.rec.waitPost(t, r.ID)

	res := e.call(webBot, "register_domain", map[string]any{"domain": "bound-args.dev", "years": 3, "reason": reason, "idempotency_key": "launch-7"})
	if !res.IsError || !strings.Contains(text(res), "already used for different arguments") {
		t.Fatalf("want an idempotency conflict, got %s", text(res))
	}
	refused := false
	for _, ev := range auditEvents(t, e, "call.result") {
		if ev["tool"] == "register_domain" && ev["outcome"] == "refused" && strings.Contains(fmt.Sprint(ev["error"]), "already used for different arguments") {
			refused = true
		}
	}
	if !refused {
		t.Errorf("the refused call is not in the audit trail: %v", auditEvents(t, e, "call.result"))
	}
	if n := len(sl.rec.byMethod("chat.postMessage")); n != 1 {
		t.Errorf("%d approval messages, want only the first call's", n)
	}
	if len(e.sb.Registrations()) != 0 {
		t.Fatal("registered before approval")
	}
	if !strings.Contains(blocksText(t, post), "Years: 1") {
		t.Fatalf("the message does not show the bound term:\n%s", blocksText(t, post))
	}

	sl.approve(t, "U0BOB", r.ID)
	e.waitState(v.OperationID, ledger.StateSucceeded)
	regs := e.sb.Registrations()
	if len(regs) != 1 || regs[0].Years != 1 {
		t.Fatalf("registrations %+v: the approval must execute exactly what it showed (1 year)", regs)
	}
}

func TestSlackQuorumNeedsTwoDistinctApprovers(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	// Above the policy's 30 USD quorum line, below its 50 USD ceiling.
	if err := e.sb.SetPrice("dev", "40.00", "40.00"); err != nil {
		t.Fatal(err)
	}
	v, r := requestRegistration(t, e, registerArgs("two-keys.dev"))
	if r.Quorum != 2 {
		t.Fatalf("quorum %d, want 2 for 40.00 USD", r.Quorum)
	}
	post := sl.rec.waitPost(t, r.ID)
	if msg := blocksText(t, post); !strings.Contains(msg, "0 of 2") || !strings.Contains(msg, "two distinct approvers must agree") {
		t.Errorf("message does not show the quorum:\n%s", msg)
	}

	sl.approve(t, "U0BOB", r.ID)
	if got := sl.rec.lastEphemeral(t, "U0BOB"); got != "Your approval is recorded: 1 of 2. Another approver has to approve before it runs." {
		t.Errorf("first approver's reply %q", got)
	}
	sl.rec.waitUpdate(t, "1 of 2", "`bob` approved via Slack")
	if op, _ := e.db.Operation(context.Background(), v.OperationID); op.State != ledger.StateAwaitingApproval {
		t.Fatalf("one approval of two moved the operation to %s", op.State)
	}
	// The same approver twice is still one approver.
	sl.approve(t, "U0BOB", r.ID)
	if got := sl.rec.lastEphemeral(t, "U0BOB"); got != slackchan.ReplyDuplicateVote {
		t.Errorf("second click by bob: %q", got)
	}
	if len(e.sb.Registrations()) != 0 {
		t.Fatal("executed with one approver")
	}

	sl.approve(t, "U0CAROL", r.ID)
	op := e.waitState(v.OperationID, ledger.StateSucceeded)
	if op.Charged == nil || op.Charged.Micros != 40_000_000 {
		t.Fatalf("charged %+v", op.Charged)
	}
	sl.rec.waitUpdate(t, "2 of 2", "*Approved* by `bob`, `carol`", "Registered two-keys.dev")
	if !hasAuditCode(t, e, approvals.EventRejected, "duplicate_vote", r.ID) {
		t.Error("the duplicate vote is not audited")
	}
}

func TestSlackFinanceApproverAbove100USD(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Pricing.Workers.MonthlyPlan = "150.00" // committed on the month's first production deploy
		c.Budgets = nil                          // above the default 50 USD a day
	}))
	res := e.call(webBot, "deploy_worker", map[string]any{
		"script_name": "web-landing", "module": okModule, "compatibility_date": "2025-01-01",
		"environment": "production", "reason": reason,
	})
	if res.IsError {
		t.Fatal(text(res))
	}
	v := opView(t, res)
	if v.Quote == nil || v.Quote.Micros != 150_000_000 {
		t.Fatalf("quote %+v, want 150.00 USD", v.Quote)
	}
	r := e.pendingApproval(v.OperationID)
	sl.rec.waitPost(t, r.ID)

	sl.approve(t, "U0BOB", r.ID)
	got := sl.rec.lastEphemeral(t, "U0BOB")
	if !strings.HasPrefix(got, slackchan.ReplyNotAllowed) || !strings.Contains(got, "needs a finance_approver") {
		t.Fatalf("bob's reply %q, want the finance rule", got)
	}
	if !hasAuditCode(t, e, approvals.EventRejected, "not_allowed", r.ID) {
		t.Error("the refused vote is not audited")
	}
	if op, _ := e.db.Operation(context.Background(), v.OperationID); op.State != ledger.StateAwaitingApproval || len(e.sb.Scripts()) != 0 {
		t.Fatalf("bob's click changed something: %s, %d scripts", op.State, len(e.sb.Scripts()))
	}

	sl.approve(t, "U0CAROL", r.ID)
	e.waitState(v.OperationID, ledger.StateSucceeded)
	if s := e.sb.Scripts(); len(s) != 1 || s[0].Name != "web-landing" {
		t.Fatalf("scripts %+v", s)
	}
	sl.rec.waitUpdate(t, "*Approved* by `carol`")
}

// mcpHTTPClient is an initialised mcp-go client over streamable HTTP on the
// server's real listener (auth none: it acts as the configured agent, web-bot).
func mcpHTTPClient(t *testing.T, baseURL string) *client.Client {
	t.Helper()
	c, err := client.NewStreamableHttpClient(baseURL+"/mcp", transport.WithHTTPTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "tollgate-e2e", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	return c
}

func callTool(ctx context.Context, c *client.Client, name string, args map[string]any) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	return c.CallTool(ctx, req)
}

// TestMCPCallWaitsForSlackClick: a real MCP client's register_domain call
// waits; the signed click arrives; the same call returns the registration.
func TestMCPCallWaitsForSlackClick(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 30 * time.Second }))
	c := mcpHTTPClient(t, sl.url)

	type outcome struct {
		res *mcp.CallToolResult
		err error
		at  time.Time
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := callTool(context.Background(), c, "register_domain", registerArgs("waits-for-me.dev"))
		done <- outcome{res, err, time.Now()}
	}()
	post := sl.rec.waitFor(t, "chat.postMessage", "for waits-for-me.dev", func(c slackAPICall) bool {
		return strings.Contains(c.Fields["text"], "waits-for-me.dev")
	})
	select {
	case o := <-done:
		t.Fatalf("the call returned before the decision: %v %v", o.err, o.res)
	default:
	}
	reqs, err := e.srv.Approvals().List(context.Background(), approvals.StatePending)
	if err != nil || len(reqs) != 1 || !strings.Contains(post.Fields["blocks"], reqs[0].ID) {
		t.Fatalf("pending approvals %+v %v", reqs, err)
	}
	clicked := time.Now()
	sl.approve(t, "U0BOB", reqs[0].ID)

	var o outcome
	select {
	case o = <-done:
	case <-time.After(hangGuard):
		t.Fatal("the waiting call did not return after the approval")
	}
	if o.err != nil || o.res.IsError {
		t.Fatalf("call: %v %s", o.err, text(o.res))
	}
	v := opView(t, o.res)
	if v.Status != "succeeded" || v.Approval == nil || v.Approval.State != approvals.StateApproved {
		t.Fatalf("result %+v", v)
	}
	rr := structured[tools.RegisterResult](t, &mcp.CallToolResult{StructuredContent: v.Result})
	if rr.Domain != "waits-for-me.dev" || rr.Charged.Display != "12.18 USD" {
		t.Fatalf("registration result %+v", rr)
	}
	t.Logf("click → tool result at the client: %s", o.at.Sub(clicked))
	if op, _ := e.db.Operation(context.Background(), v.OperationID); op.Client.Name != "tollgate-e2e" || op.Client.Transport != "http" {
		t.Errorf("operation client %+v", op.Client)
	}
}

// TestMCPClientGoneBeforeClick: the client disconnects while the call waits;
// the approval still executes, and the agent reads the result later with
// get_operation, long-polling with wait_seconds.
func TestMCPClientGoneBeforeClick(t *testing.T) {
	t.Parallel()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 30 * time.Second }))
	first := mcpHTTPClient(t, sl.url)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := callTool(ctx, first, "register_domain", map[string]any{"domain": "gone-away.dev", "reason": reason, "idempotency_key": "gone-1"})
		errc <- err
	}()
	sl.rec.waitFor(t, "chat.postMessage", "for gone-away.dev", func(c slackAPICall) bool {
		return strings.Contains(c.Fields["text"], "gone-away.dev")
	})
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("the cancelled call returned a result")
		}
	case <-time.After(hangGuard):
		t.Fatal("the call did not end when its client went away")
	}
	_ = first.Close()

	// A new session (the agent came back) finds its operation.
	c := mcpHTTPClient(t, sl.url)
	list, err := callTool(context.Background(), c, "list_operations", map[string]any{})
	if err != nil || list.IsError {
		t.Fatalf("list_operations: %v %s", err, text(list))
	}
	ops := structured[tools.OperationList](t, list).Operations
	if len(ops) != 1 || ops[0].Status != "awaiting_approval" {
		t.Fatalf("operations %+v", ops)
	}
	id := ops[0].OperationID
	r := e.pendingApproval(id)

	// Long-poll first, then click: the poll answers when the state moves.
	type polled struct {
		res *mcp.CallToolResult
		err error
	}
	pc := make(chan polled, 1)
	go func() {
		res, err := callTool(context.Background(), c, "get_operation", map[string]any{"operation_id": id, "wait_seconds": 20})
		pc <- polled{res, err}
	}()
	time.Sleep(100 * time.Millisecond) // let the long poll start; it also polls, so this is not load-bearing
	sl.approve(t, "U0BOB", r.ID)
	var p polled
	select {
	case p = <-pc:
	case <-time.After(hangGuard):
		t.Fatal("the long poll did not answer the state change")
	}
	if p.err != nil {
		t.Fatalf("long poll: %v", p.err)
	}
	v := opView(t, p.res)
	if v.Status == "awaiting_approval" {
		t.Fatalf("the long poll answered without a change: %+v", v)
	}
	deadline := time.Now().Add(hangGuard)
	for v.Status != "succeeded" {
		if ledger.State(v.Status).Terminal() || time.Now().After(deadline) {
			t.Fatalf("operation ended %s: %s", v.Status, v.Error)
		}
		res, err := callTool(context.Background(), c, "get_operation", map[string]any{"operation_id": id, "wait_seconds": 10})
		if err != nil {
			t.Fatal(err)
		}
		v = opView(t, res)
	}
	rr := structured[tools.RegisterResult](t, &mcp.CallToolResult{StructuredContent: v.Result})
	if rr.Domain != "gone-away.dev" || len(e.sb.Registrations()) != 1 {
		t.Fatalf("result %+v, registrations %+v", rr, e.sb.Registrations())
	}
	// Repeating the original call with its key returns the same operation.
	again, err := callTool(context.Background(), c, "register_domain", map[string]any{"domain": "gone-away.dev", "reason": reason, "idempotency_key": "gone-1"})
	if err != nil || opView(t, again).OperationID != id || opView(t, again).Status != "succeeded" {
		t.Fatalf("retry with the same key: %v %+v", err, again)
	}
}

// TestSlackDownNeverApproves: with the Slack API unreachable the request
// stays pending (posting is retried with backoff), nothing is approved, and
// it still expires.
func TestSlackDownNeverApproves(t *testing.T) {
	t.Parallel()
	clock := newManualClock()
	e, sl := newSlackEnv(t, withClock(clock.Now), withConfig(func(c *Config) {
		c.Approvals.Wait = 0
		c.Budgets = []BudgetConfig{{Scope: "team:web", Window: "day", Limit: "100.00"}}
	}))
	e.slack.Stop()

	v, r := requestRegistration(t, e, registerArgs("slack-is-down.dev"))
	waitLog(t, e, "call=post attempt=1")
	// The retry is due after the backoff on the server's clock.
	clock.Advance(3 * time.Second)
	waitLog(t, e, "call=post attempt=2")
	got, err := e.srv.Approvals().Get(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ref, _ := e.srv.Approvals().PostRef(context.Background(), r.ID, slackchan.Name); got.State != approvals.StatePending || ref != "" || len(got.Votes) != 0 {
		t.Fatalf("approval while Slack is down: %+v", got)
	}
	if op, _ := e.db.Operation(context.Background(), v.OperationID); op.State != ledger.StateAwaitingApproval {
		t.Fatalf("operation %s while Slack is down", op.State)
	}
	if n := len(sl.rec.all()); n != 0 {
		t.Fatalf("%d Slack calls reached a stopped server", n)
	}

	clock.Advance(31 * time.Minute)
	op := e.waitState(v.OperationID, ledger.StateExpired)
	if op.ErrorCode != "approval_expired" {
		t.Fatalf("code %s", op.ErrorCode)
	}
	assertHeld(t, e, "team:web", 0)
	if n := len(e.sb.Registrations()); n != 0 {
		t.Fatalf("registered while Slack was down: %d", n)
	}
}

// waitLog polls the captured logs for s.
func waitLog(t *testing.T, e *testEnv, s string) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !strings.Contains(e.logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("logs never contained %q:\n%s", s, e.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAttackForgedSlackFloodAuditIsRateLimited: forged requests to
// /slack/interactions are audited like refused bearer tokens, up to 100 a
// second; past that only their number is recorded, on the next event audited.
func TestAttackForgedSlackFloodAuditIsRateLimited(t *testing.T) {
	t.Parallel()
	clock := newManualClock()
	e, sl := newSlackEnv(t, withClock(clock.Now), withQuietLogs())
	body := slackForm(t, slackBlockAction("U0BOB", slackchan.ActionIDApprove, "apr_forged"))
	forge := func() {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		if rep := slackPost(t, sl.url, body, ts, slackSignature("not-the-signing-secret", ts, body)); rep.Status != http.StatusUnauthorized {
			t.Fatalf("forged request answered %d", rep.Status)
		}
	}
	const sent = auditedRejectionsPerSecond + 30
	for range sent {
		forge()
	}
	if n := len(auditEvents(t, e, slackchan.EventRejected)); n != auditedRejectionsPerSecond {
		t.Fatalf("%d slack.rejected events for %d forged requests within a second, want %d", n, sent, auditedRejectionsPerSecond)
	}
	clock.Advance(time.Second)
	forge()
	ev := auditEvents(t, e, slackchan.EventRejected)
	if len(ev) != auditedRejectionsPerSecond+1 {
		t.Fatalf("%d events after the next second", len(ev))
	}
	if got := ev[len(ev)-1]["unaudited_before"]; got != float64(sent-auditedRejectionsPerSecond) {
		t.Fatalf("unaudited_before = %v, want %d", got, sent-auditedRejectionsPerSecond)
	}
	if rep, err := e.db.Verify(context.Background()); err != nil || !rep.OK {
		t.Fatalf("audit chain: %+v %v", rep, err)
	}
}
