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

	"github.com/tollgatehq/tollgate/approvals/display"
)

// Text an agent, its MCP client or a voter controls, as hostile as it gets.
const (
	forgedCostLine = "Claude Code\n\n*Quoted cost (max)*\n0.01 USD ✅ pre-approved"
	rtlReason      = "Renew the landing page \u202Egnp.exe\u202C before launch\u2066\u2069\u200e\u200f"
	forgedApproval = "routine\n\n:white_check_mark: *Approved* by `alice`\n# Looks fine"
	markupSoup     = "<!channel> <!here> <@U0ALICE> <https://evil.example|Approve here> &amp; ```"
	invisibles     = "a\u200bb\u200cc\u200dd\u2060e\ufefff\u00adg\U000E0041h\u3164i\x1b[31mj\u0085k\u2028l"
)

// hostileRequest fills every field a message shows from outside tollgate's
// own code with an attack.
func hostileRequest() approvals.Request {
	r := goldenDomain()
	r.Client = forgedCostLine
	r.Reason = rtlReason + " " + forgedApproval
	r.Summary = "Register example.dev\n*for free*" + markupSoup
	r.Args = append(r.Args, approvals.Field{Label: "note\n*bold*", Value: markupSoup + invisibles})
	r.Agent = "web-bot\n<!channel>"
	r.Team = "web`\u202e"
	return r
}

// tenKilobytes returns s repeated to 10 kB.
func tenKilobytes(s string) string {
	return strings.Repeat(s, 10_000/len(s)+1)[:10_000]
}

// textObject is one text object of a message as Slack receives it.
type textObject struct{ Type, Text string }

// textObjects walks the wire JSON of v and returns every text object.
func textObjects(t *testing.T, v any) []textObject {
	t.Helper()
	var tree any
	if err := json.Unmarshal(wireJSON(t, v, ""), &tree); err != nil {
		t.Fatal(err)
	}
	var out []textObject
	var walk func(any)
	walk = func(n any) {
		switch n := n.(type) {
		case map[string]any:
			typ, _ := n["type"].(string)
			if text, ok := n["text"].(string); ok && (typ == "mrkdwn" || typ == "plain_text") {
				out = append(out, textObject{typ, text})
			}
			for _, c := range n {
				walk(c)
			}
		case []any:
			for _, c := range n {
				walk(c)
			}
		}
	}
	walk(tree)
	return out
}

// noForbidden fails when any text object carries a rune display removes,
// other than the line breaks tollgate writes between its own lines.
func noForbidden(t *testing.T, what string, texts []textObject) {
	t.Helper()
	for _, o := range texts {
		for _, r := range o.Text {
			if r != '\n' && display.Forbidden(r) {
				t.Errorf("%s: %s text %q carries U+%04X", what, o.Type, display.Text(o.Text, 60), r)
			}
		}
	}
}

func TestAttackClientNameForgesCostLine(t *testing.T) {
	t.Parallel()
	r := goldenDomain()
	r.Client = forgedCostLine
	blocks := RequestBlocks(r, goldenNow)
	var costFields, clientFields int
	for _, o := range textObjects(t, blocks) {
		label, value, _ := strings.Cut(o.Text, "\n")
		switch label {
		case "*Quoted cost (max)*":
			costFields++
			if value != "12.20 USD" {
				t.Errorf("cost field shows %q", value)
			}
		case "*MCP client*":
			clientFields++
			if strings.Contains(value, "\n") || strings.Count(value, "`") != 2 || !strings.HasPrefix(value, "`") || !strings.HasSuffix(value, "`") {
				t.Errorf("client name escapes its code span: %q", value)
			}
		}
		if o.Type == "mrkdwn" && strings.Contains(o.Text, "\n0.01 USD") {
			t.Errorf("a line of its own says 0.01 USD: %q", o.Text)
		}
	}
	if costFields != 1 || clientFields != 1 {
		t.Fatalf("%d cost fields and %d client fields, want one each", costFields, clientFields)
	}
}

func TestAttackReasonRightToLeftOverride(t *testing.T) {
	t.Parallel()
	r := goldenDomain()
	r.Reason = rtlReason
	blocks := RequestBlocks(r, goldenNow)
	noForbidden(t, "message", textObjects(t, blocks))
	if !strings.Contains(string(wireJSON(t, blocks, "")), "Renew the landing page gnp.exe before launch") {
		t.Error("the reason's visible text is not shown")
	}
	if fb := FallbackText(r); strings.ContainsAny(fb, "\u202e\u202c\u2066\u2069\u200e\u200f") {
		t.Errorf("fallback text %q keeps bidi controls", fb)
	}
}

func TestAttackReasonForgesApprovedLine(t *testing.T) {
	t.Parallel()
	r := goldenDomain()
	r.Reason = forgedApproval
	for _, o := range textObjects(t, RequestBlocks(r, goldenNow)) {
		if !strings.HasPrefix(o.Text, "*The agent's reason*\n") {
			continue
		}
		body := strings.TrimPrefix(o.Text, "*The agent's reason*\n")
		if strings.Contains(body, "\n") || strings.Count(body, "```") != 2 || !strings.HasPrefix(body, "```") || !strings.HasSuffix(body, "```") {
			t.Fatalf("the reason leaves its code block: %q", body)
		}
		return
	}
	t.Fatal("no reason block")
}

func TestAttackMentionsAndLinks(t *testing.T) {
	t.Parallel()
	r := hostileRequest()
	r.Module = &approvals.Module{Name: markupSoup, SHA256: markupSoup, FirstLines: markupSoup + "\n" + markupSoup}
	r.Votes = []approvals.Vote{{Approver: markupSoup, Via: approvals.ViaSlack, Outcome: approvals.OutcomeApprove, Reason: markupSoup, At: goldenNow}}
	r.ResultText = markupSoup
	for name, v := range map[string]any{"pending": RequestBlocks(r, goldenNow), "modal": DenyModal(r)} {
		checkLimits(t, v)
		for _, o := range textObjects(t, v) {
			if o.Type == "mrkdwn" {
				checkMarkup(t, name, o.Text)
			}
		}
	}
	r.State, r.DecidedReason, r.DecidedAt = approvals.StateDenied, markupSoup, goldenNow
	checkLimits(t, RequestBlocks(r, goldenNow))
	if fb := FallbackText(r); strings.Contains(fb, "\n") {
		t.Errorf("fallback text %q has a line break", fb)
	}
}

func TestAttackInvisibleAndControlCharacters(t *testing.T) {
	t.Parallel()
	r := hostileRequest()
	r.Client, r.Reason, r.Owner = invisibles, invisibles, invisibles
	r.Module = &approvals.Module{Name: invisibles, SHA256: invisibles, FirstLines: invisibles}
	r.Votes = []approvals.Vote{{Approver: invisibles, Via: approvals.ViaSlack, Outcome: approvals.OutcomeDeny, Reason: invisibles, At: goldenNow}}
	r.ResultText = invisibles
	noForbidden(t, "pending", textObjects(t, RequestBlocks(r, goldenNow)))
	noForbidden(t, "modal", textObjects(t, DenyModal(r)))
	r.State, r.DecidedReason, r.DecidedAt = approvals.StateDenied, invisibles, goldenNow
	noForbidden(t, "denied", textObjects(t, RequestBlocks(r, goldenNow)))
	noForbidden(t, "fallback", []textObject{{"plain_text", FallbackText(r)}})
}

func TestAttackTenKilobyteFields(t *testing.T) {
	t.Parallel()
	big := tenKilobytes("<!channel> *x* \u202e`")
	r := goldenDeploy()
	r.Summary, r.Client, r.Reason, r.Agent, r.Team, r.Owner, r.ResultText = big, big, big, big, big, big, big
	r.Args = []approvals.Field{{Label: big, Value: big}, {Label: "b", Value: big}}
	r.Module.Name, r.Module.FirstLines = big, big
	r.Votes = []approvals.Vote{{Approver: big, Via: approvals.ViaSlack, Outcome: approvals.OutcomeApprove, Reason: big, At: goldenNow}}
	checkLimits(t, RequestBlocks(r, goldenNow))
	checkLimits(t, DenyModal(r))
	r.State, r.DecidedReason, r.DecidedAt = approvals.StateDenied, big, goldenNow
	checkLimits(t, RequestBlocks(r, goldenNow))
	if n := runeLen(FallbackText(r)); n > maxMessageText {
		t.Errorf("fallback text has %d characters", n)
	}
}

// A deny reason typed into the Slack modal is shown back on the message: it
// cannot forge lines there either.
func TestAttackDenyReasonForgesLines(t *testing.T) {
	t.Parallel()
	f := newFixture(t, withSlack())
	r := f.Request(nil)
	f.click(blockActionPayload("U0BOB", ActionIDDeny, r.ID))
	f.click(viewSubmissionPayload("U0BOB", r.ID, "no\n\n*Approved* by `carol` <!channel>\u202e"))
	f.MustDecided(approvals.StateDenied)
	updates := f.slack.byMethod("chat.update")
	if len(updates) == 0 {
		t.Fatal("message not updated")
	}
	var blocks []map[string]any
	if err := json.Unmarshal([]byte(updates[len(updates)-1].Form.Get("blocks")), &blocks); err != nil {
		t.Fatal(err)
	}
	texts := textObjects(t, blocks)
	noForbidden(t, "denied message", texts)
	for _, o := range texts {
		if strings.Contains(o.Text, "*Denied*") && (strings.Contains(o.Text, "\n") || strings.Contains(o.Text, "<!channel>")) {
			t.Fatalf("the deny reason forges a line or a mention: %q", o.Text)
		}
		if strings.HasPrefix(o.Text, "*Approved*") || strings.Contains(o.Text, "\n*Approved*") {
			t.Fatalf("a forged approval line: %q", o.Text)
		}
	}
}

// Alerts (budget blocks, auto-freeze) carry agent and budget names: they
// reach the channel as one line.
func TestAttackAlertForgesLines(t *testing.T) {
	t.Parallel()
	f := newFixture(t, withSlack())
	if err := f.Svc.Notify(context.Background(), "Blocked register_domain for agent web-bot\n\n:white_check_mark: all clear \u202e<!channel>"); err != nil {
		t.Fatal(err)
	}
	posts := f.slack.byMethod("chat.postMessage")
	if len(posts) != 1 {
		t.Fatalf("%d posts", len(posts))
	}
	if text := posts[0].Form.Get("text"); strings.ContainsAny(text, "\n\u202e<>") || posts[0].Form.Get("mrkdwn") != "false" {
		t.Fatalf("alert text %q (mrkdwn %q)", text, posts[0].Form.Get("mrkdwn"))
	}
}

// The notification text of an approval message (push notifications, clients
// without Block Kit) is plain: one line, escaped, mrkdwn off.
func TestAttackNotificationTextIsPlain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, withSlack())
	f.Request(func(r *approvals.Request) {
		r.Summary, r.Agent = "Register example.dev\n*free*"+markupSoup, "web-bot\u202e"
	})
	posts := f.slack.byMethod("chat.postMessage")
	if len(posts) != 1 {
		t.Fatalf("%d posts", len(posts))
	}
	form := posts[0].Form
	if text := form.Get("text"); strings.ContainsAny(text, "\n\u202e<>") || form.Get("mrkdwn") != "false" {
		t.Fatalf("notification text %q (mrkdwn %q)", text, form.Get("mrkdwn"))
	}
}

// The hostile messages as Slack receives them, pinned in testdata.
func hostileGoldens() map[string]any {
	denied := hostileRequest()
	denied.State = approvals.StateDenied
	denied.DecidedAt = goldenNow.Add(2 * time.Minute)
	denied.DecidedReason = forgedApproval
	denied.Votes = []approvals.Vote{{Approver: "bob", User: "U0BOB", Via: approvals.ViaSlack, Outcome: approvals.OutcomeDeny, Reason: forgedApproval + markupSoup, At: denied.DecidedAt}}
	big := goldenDeploy()
	big.Client, big.Reason = tenKilobytes(forgedCostLine+" "), tenKilobytes(rtlReason+" ")
	return map[string]any{
		"hostile_pending":   RequestBlocks(hostileRequest(), goldenNow.Add(time.Minute)),
		"hostile_denied":    RequestBlocks(denied, goldenNow.Add(3*time.Minute)),
		"hostile_modal":     DenyModal(hostileRequest()),
		"hostile_10k":       RequestBlocks(big, goldenNow),
		"hostile_fallbacks": []string{FallbackText(hostileRequest()), FallbackText(denied), FallbackText(big)},
	}
}

// logLines is a slog handler that keeps every record's message and attributes.
type logLines struct {
	mu    sync.Mutex
	lines []map[string]string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logLines) WithGroup(string) slog.Handler            { return l }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	line := map[string]string{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool {
		line[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	return nil
}

func (l *logLines) with(msg string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, line := range l.lines {
		if line["msg"] == msg {
			out = append(out, line)
		}
	}
	return out
}

// A flood of forged, stale and replayed requests to /slack/interactions gets
// a bounded number of WARN lines: the first ones each minute, then one line
// that counts the rest. Every one of them still reaches the audit function
// (whose own limit is the server's).
func TestAttackForgedSlackFloodLogsAreRateLimited(t *testing.T) {
	t.Parallel()
	logs := &logLines{}
	f := newFixture(t, withSlack(), func(o *approvals.Options, _ *fixture) { o.Logger = slog.New(logs) })
	r := f.Request(nil)
	body := signedBody(t, blockActionPayload("U0BOB", ActionIDApprove, r.ID))
	now := strconv.FormatInt(time.Now().Unix(), 10)
	stale := strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)
	send := func(ts, sig string) int {
		rec := httptest.NewRecorder()
		f.ch.Handler().ServeHTTP(rec, interactionRequest(body, ts, sig))
		return rec.Code
	}
	const forged = 40
	for i := range forged {
		ts, sig := now, sign("not-the-secret", now, body)
		if i%2 == 1 {
			ts, sig = stale, sign(testSecret, stale, body)
		}
		if code := send(ts, sig); code != http.StatusUnauthorized {
			t.Fatalf("forged request %d answered %d", i, code)
		}
	}
	if got := len(f.Audit.Events(t, EventRejected)); got != forged {
		t.Fatalf("%d slack.rejected events for %d refusals", got, forged)
	}
	if got := len(logs.with("slack request rejected")); got != rejectLogBurst {
		t.Fatalf("%d WARN lines for %d refusals in one minute, want %d", got, forged, rejectLogBurst)
	}
	if got := logs.with("more slack requests were rejected than are logged one by one"); len(got) != 0 {
		t.Fatalf("summary before the minute is over: %v", got)
	}

	// The minute ends with no further request: housekeeping writes the count.
	f.Clock.Advance(rejectLogWindow)
	f.ch.Housekeep(context.Background())
	sum := logs.with("more slack requests were rejected than are logged one by one")
	if len(sum) != 1 || sum[0]["unlogged"] != strconv.Itoa(forged-rejectLogBurst) || sum[0]["level"] != "WARN" {
		t.Fatalf("summary lines %v, want one counting %d", sum, forged-rejectLogBurst)
	}
	f.ch.Housekeep(context.Background())
	if n := len(logs.with("more slack requests were rejected than are logged one by one")); n != 1 {
		t.Fatalf("%d summary lines after a quiet minute, want still 1", n)
	}

	// A new minute logs afresh; a refusal after it ends carries the count itself.
	for range rejectLogBurst + 3 {
		send(now, sign("not-the-secret", now, body))
	}
	f.Clock.Advance(rejectLogWindow)
	send(now, "v0=00")
	if got := len(logs.with("slack request rejected")); got != 2*rejectLogBurst+1 {
		t.Fatalf("%d WARN lines, want %d", got, 2*rejectLogBurst+1)
	}
	if sum := logs.with("more slack requests were rejected than are logged one by one"); len(sum) != 2 || sum[1]["unlogged"] != "3" {
		t.Fatalf("summary lines %v", sum)
	}
}
