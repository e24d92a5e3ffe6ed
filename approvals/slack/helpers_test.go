package slack

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/approvalstest"
)

const testSecret = "8f742231b10e8888abcd99yyyzzz85a5" // Slack's documented example signing secret

var (
	domainRequest = approvalstest.DomainRequest
	argsHash      = approvalstest.ArgsHash
)

// fixture is the approvals service of approvalstest with this channel attached.
type fixture struct {
	*approvalstest.Fixture
	ch     *Channel
	api    *slackapi.Client // nil without withSlack
	slack  *fakeSlack
	secret string // the channel's signing secret (testSecret)
	// console, when set, is the channel's ConsoleLink (withConsole).
	console func(ctx context.Context, approver, requestID, slackUser string) (string, time.Time, error)
}

// withConsole gives the channel a console link minter that records who asked.
func withConsole(minted chan<- string) fixtureOpt {
	return func(_ *approvals.Options, f *fixture) {
		f.console = func(_ context.Context, approver, requestID, slackUser string) (string, time.Time, error) {
			minted <- approver + " " + requestID + " " + slackUser
			return "https://tollgate.example.com/console/signin?t=ONE-TIME", f.Clock.Now().Add(10 * time.Minute), nil
		}
	}
}

type fixtureOpt func(*approvals.Options, *fixture)

func withSlack(extra ...slacktest.Binder) fixtureOpt {
	return func(o *approvals.Options, f *fixture) {
		f.slack = newFakeSlack(f.T, extra...)
		f.api = slackapi.New("xoxb-test-token", slackapi.OptionAPIURL(f.slack.srv.GetAPIURL()))
	}
}

func newFixture(t testing.TB, opts ...fixtureOpt) *fixture {
	t.Helper()
	f := &fixture{secret: testSecret}
	var logger *slog.Logger
	f.Fixture = approvalstest.New(t, func(o *approvals.Options, fx *approvalstest.Fixture) {
		f.Fixture = fx
		for _, opt := range opts {
			opt(o, f)
		}
		logger = o.Logger
	})
	f.ch = New(f.Svc, Config{Client: f.api, Channel: "C0APPROVALS", SigningSecret: f.secret, Clock: f.Clock.Now, Logger: logger, ConsoleLink: f.console})
	if f.ch.Posts() {
		f.Svc.AddChannel(f.ch)
	}
	return f
}

// ref is the Slack message posted for request id (zero when none).
func (f *fixture) ref(id string) MessageRef {
	f.T.Helper()
	ref, err := f.Svc.PostRef(context.Background(), id, Name)
	if err != nil {
		f.T.Fatal(err)
	}
	if ref == "" {
		return MessageRef{}
	}
	m, err := ParseRef(ref)
	if err != nil {
		f.T.Fatal(err)
	}
	return m
}

// ---- Slack Web API (slacktest, with recording handlers for the methods used)

type slackCall struct {
	Method string
	Form   url.Values
	JSON   map[string]any
}

type fakeSlack struct {
	srv       *slacktest.Server
	mu        sync.Mutex
	calls     []slackCall
	failing   atomic.Bool  // answer chat.* and views.* with HTTP 500
	rateLimit atomic.Int64 // > 0: answer 429 with this Retry-After (seconds)
	ts        atomic.Int64
	stopOnce  sync.Once
}

// newFakeSlack starts slacktest's Web API server with recording handlers for the
// methods tollgate calls; extra binders (like a Socket Mode /ws endpoint) come first.
func newFakeSlack(t testing.TB, extra ...slacktest.Binder) *fakeSlack {
	f := &fakeSlack{}
	binders := append(extra, func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", f.handle("chat.postMessage"))
		c.Handle("/chat.update", f.handle("chat.update"))
		c.Handle("/chat.postEphemeral", f.handle("chat.postEphemeral"))
		c.Handle("/views.open", f.handle("views.open"))
	})
	f.srv = slacktest.NewTestServer(binders...)
	f.srv.Start()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeSlack) stop() { f.stopOnce.Do(f.srv.Stop) }

func (f *fakeSlack) handle(method string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if f.failing.Load() {
			http.Error(w, "slack is having a bad day", http.StatusInternalServerError)
			return
		}
		if n := f.rateLimit.Load(); n > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(n, 10))
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		body, _ := io.ReadAll(r.Body)
		call := slackCall{Method: method}
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			_ = json.Unmarshal(body, &call.JSON)
		} else {
			call.Form, _ = url.ParseQuery(string(body))
		}
		f.mu.Lock()
		f.calls = append(f.calls, call)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch method {
		case "chat.postMessage":
			ts := fmt.Sprintf("1790000000.%06d", f.ts.Add(1))
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": call.Form.Get("channel"), "ts": ts})
		case "chat.update":
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": call.Form.Get("channel"), "ts": call.Form.Get("ts"), "text": call.Form.Get("text")})
		case "chat.postEphemeral":
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "message_ts": "1790000000.999999"})
		case "views.open":
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "view": map[string]any{"id": "V0DENY"}})
		}
	}
}

func (f *fakeSlack) byMethod(method string) []slackCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []slackCall
	for _, c := range f.calls {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeSlack) lastEphemeral(t testing.TB) string {
	t.Helper()
	eph := f.byMethod("chat.postEphemeral")
	if len(eph) == 0 {
		t.Fatal("no ephemeral reply was sent")
	}
	return eph[len(eph)-1].Form.Get("text")
}

// ---- signed interaction payloads, as Slack sends them

func slackUser(id string) map[string]any {
	return map[string]any{"id": id, "username": strings.ToLower(id), "name": strings.ToLower(id), "team_id": "T0TOLLGATE"}
}

var clickSeq atomic.Int64

// blockActionPayload is a button click as Slack sends it; like Slack, every
// click has its own trigger_id and action_ts.
func blockActionPayload(userID, actionID, value string) map[string]any {
	n := clickSeq.Add(1)
	return map[string]any{
		"type":       "block_actions",
		"user":       slackUser(userID),
		"api_app_id": "A0TOLLGATE",
		"token":      "verification-token-unused",
		"container": map[string]any{
			"type": "message", "message_ts": "1790000000.000001", "channel_id": "C0APPROVALS", "is_ephemeral": false,
		},
		"trigger_id":            "13345224609.738474920.8088930838d88f008e0",
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
			"block_id":  BlockActions,
			"text":      map[string]any{"type": "plain_text", "text": "Approve", "emoji": true},
			"value":     value,
			"style":     "primary",
			"type":      "button",
			"action_ts": fmt.Sprintf("1790000123.%06d", n),
		}},
	}
}

func viewSubmissionPayload(userID, requestID, reason string) map[string]any {
	return map[string]any{
		"type":       "view_submission",
		"team":       map[string]any{"id": "T0TOLLGATE", "domain": "tollgate"},
		"user":       slackUser(userID),
		"api_app_id": "A0TOLLGATE",
		"token":      "verification-token-unused",
		"trigger_id": "13345224609.738474920.8088930838d88f008e1",
		"view": map[string]any{
			"id":               "V0DENY",
			"team_id":          "T0TOLLGATE",
			"type":             "modal",
			"private_metadata": requestID,
			"callback_id":      DenyModalCallbackID,
			"hash":             "156772938.1827394",
			"title":            map[string]any{"type": "plain_text", "text": "Deny request"},
			"blocks":           []any{},
			"state": map[string]any{"values": map[string]any{
				DenyReasonBlockID: map[string]any{
					DenyReasonActionID: map[string]any{"type": "plain_text_input", "value": reason},
				},
			}},
		},
		"response_urls":         []any{},
		"is_enterprise_install": false,
	}
}

// signedBody form-encodes payload as Slack does.
func signedBody(t testing.TB, payload any) string {
	t.Helper()
	js, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return url.Values{"payload": {string(js)}}.Encode()
}

func sign(secret, ts, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + ts + ":" + body))
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}

func interactionRequest(body, ts, sig string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/slack/interactions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if ts != "" {
		req.Header.Set("X-Slack-Request-Timestamp", ts)
	}
	if sig != "" {
		req.Header.Set("X-Slack-Signature", sig)
	}
	return req
}

// click sends payload signed now (wall clock: Slack's window is real time) and returns the response.
func (f *fixture) click(payload any) *httptest.ResponseRecorder {
	f.T.Helper()
	body := signedBody(f.T, payload)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	rec := httptest.NewRecorder()
	f.ch.Handler().ServeHTTP(rec, interactionRequest(body, ts, sign(testSecret, ts, body)))
	return rec
}
