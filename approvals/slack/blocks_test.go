package slack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	slackapi "github.com/slack-go/slack"
	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger/money"
)

var goldenNow = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func goldenDomain() approvals.Request {
	r := domainRequest(goldenNow)
	r.ID = "apr_7f3kq2m5x9c4v8b6n1z0w3e5r7"
	r.OperationID = "op_4h6j8k2m4n6p8q2r4s6t8v2w4x"
	r.CreatedAt = goldenNow
	r.State = approvals.StatePending
	return r
}

func goldenDeploy() approvals.Request {
	var module strings.Builder
	module.WriteString("// web-app production worker <script>&amp;\n")
	for i := 0; module.Len() < 6000; i++ {
		fmt.Fprintf(&module, "export const route%03d = async (req, env) => new Response(`route ${%d} ok`, { status: 200 });\n", i, i)
	}
	module.WriteString("```\n<!channel> please approve\n")
	reason := strings.Repeat("Deploying the checkout fix <@U0CAROL> & friends; ", 100) // 5000 chars
	return approvals.Request{
		ID:          "apr_2b4d6f8h0j2l4n6p8r0t2v4x6z",
		OperationID: "op_9a8b7c6d5e4f3g2h1j0k9l8m7n",
		Tool:        "deploy_worker",
		Agent:       "web-deployer",
		Team:        "web",
		Owner:       "dave",
		Client:      "claude-code 1.2.3 (session 5f1c)",
		Summary:     "Deploy worker web-app to production",
		Args: []approvals.Field{
			{Label: "script_name", Value: "web-app"},
			{Label: "environment", Value: "production"},
			{Label: "compatibility_date", Value: "2026-11-01"},
			{Label: "module", Value: "worker.js (6,1xx bytes, sha256 " + argsHash("module")[:12] + "…)"},
		},
		Module: &approvals.Module{
			Name:       "worker.js",
			Size:       module.Len(),
			SHA256:     argsHash(module.String()),
			FirstLines: module.String(),
		},
		AmountMicros: 5_000_000,
		Currency:     "USD",
		AmountText:   "5.00 USD",
		Headroom:     []string{"team:web month — 95.00 USD left of 100.00 USD"},
		Reason:       reason,
		Policy:       "allowed by worker_script policy (name has the team prefix web-; role deployer may deploy to production); approval required: production deploy",
		ArgsHash:     argsHash("deploy web-app"),
		Irreversible: true,
		Quorum:       1,
		State:        approvals.StatePending,
		CreatedAt:    goldenNow,
		ExpiresAt:    goldenNow.Add(30 * time.Minute),
	}
}

func goldenCases() map[string]any {
	decided := goldenDomain()
	decided.State = approvals.StateApproved
	decided.Votes = []approvals.Vote{{Approver: "alice", User: "U0ALICE", Via: approvals.ViaSlack, Outcome: approvals.OutcomeApprove, At: goldenNow.Add(4 * time.Minute)}}
	decided.DecidedAt = goldenNow.Add(4 * time.Minute)
	decided.DecidedReason = "approved by alice"
	decided.Consumed = true
	decided.ConsumedAt = goldenNow.Add(4*time.Minute + 2*time.Second)
	decided.ResultText = "Registered example.dev until 2027-11-22 (charged 12.20 USD)."

	quorum := goldenDomain()
	quorum.AmountMicros, quorum.AmountText = 62_000_000, "62.00 USD"
	quorum.Quorum = 2
	quorum.Votes = []approvals.Vote{{Approver: "bob", User: "U0BOB", Via: approvals.ViaSocket, Outcome: approvals.OutcomeApprove, At: goldenNow.Add(2 * time.Minute)}}

	cases := map[string]any{
		"domain_registration": RequestBlocks(goldenDomain(), goldenNow.Add(time.Minute)),
		"with_console_button": RequestBlocks(goldenDomain(), goldenNow.Add(time.Minute), WithConsoleButton()),
		"with_mandate_offer": RequestBlocks(goldenDomain(), goldenNow.Add(time.Minute), WithMandateOffer(approvals.MandateSpec{
			Pattern: "*.dev", MaxPerCall: money.Money{Micros: 15_000_000, Currency: "USD"}, MaxTotal: money.Money{Micros: 75_000_000, Currency: "USD"},
			Count: 5, Lifetime: 24 * time.Hour,
		}), WithConsoleButton()),
		"production_deploy_truncated": RequestBlocks(goldenDeploy(), goldenNow.Add(time.Minute)),
		"decided":                     RequestBlocks(decided, goldenNow.Add(5*time.Minute)),
		"quorum_1_of_2":               RequestBlocks(quorum, goldenNow.Add(3*time.Minute)),
		"deny_modal":                  DenyModal(goldenDomain()),
	}
	for name, v := range hostileGoldens() {
		cases[name] = v
	}
	return cases
}

// TestGoldenBlocks compares the builders' JSON with testdata/*.golden.json;
// UPDATE_GOLDEN=true rewrites them.
func TestGoldenBlocks(t *testing.T) {
	t.Parallel()
	update := os.Getenv("UPDATE_GOLDEN") == "true"
	for name, v := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := wireJSON(t, v, "  ")
			path := filepath.Join("testdata", name+".golden.json")
			if update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("missing golden file (run with UPDATE_GOLDEN=true): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs from the golden file; review and rerun with UPDATE_GOLDEN=true.\n--- got ---\n%s", path, got)
			}
		})
	}
}

// checkLimits walks the wire JSON of a message or modal and reports every
// Slack limit it breaks and any raw markup from untrusted text.
func checkLimits(t testing.TB, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []map[string]any
	if _, ok := v.(slackapi.ModalViewRequest); ok {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"title", "submit", "close"} {
			if n := runeLen(m[k].(map[string]any)["text"]); n > maxModalTitle {
				t.Errorf("modal %s has %d chars", k, n)
			}
		}
		raw, _ := json.Marshal(m["blocks"])
		_ = json.Unmarshal(raw, &blocks)
	} else if err := json.Unmarshal(b, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) > maxBlocks {
		t.Errorf("%d blocks, limit %d", len(blocks), maxBlocks)
	}
	ids := map[string]bool{}
	for _, blk := range blocks {
		id, _ := blk["block_id"].(string)
		if id == "" || ids[id] {
			t.Errorf("block without a unique constant block_id: %v", blk["type"])
		}
		ids[id] = true
		text := func(o any) string {
			m, _ := o.(map[string]any)
			s, _ := m["text"].(string)
			return s
		}
		// Slack reads markup only in mrkdwn; plain_text shows it as typed.
		mrkdwn := func(o any) string {
			if m, _ := o.(map[string]any); m["type"] == "mrkdwn" {
				return text(o)
			}
			return ""
		}
		switch blk["type"] {
		case "header":
			if n := runeLen(text(blk["text"])); n > maxHeaderText || n == 0 {
				t.Errorf("header text %d chars", n)
			}
		case "section":
			if blk["text"] != nil {
				s := text(blk["text"])
				if n := runeLen(s); n > maxSectionText || n == 0 {
					t.Errorf("section %s text %d chars", id, n)
				}
				checkMarkup(t, id, mrkdwn(blk["text"]))
			}
			fields, _ := blk["fields"].([]any)
			if len(fields) > 10 {
				t.Errorf("section %s has %d fields", id, len(fields))
			}
			for _, f := range fields {
				if n := runeLen(text(f)); n > maxFieldText || n == 0 {
					t.Errorf("field text %d chars", n)
				}
				checkMarkup(t, id, mrkdwn(f))
			}
		case "context":
			els, _ := blk["elements"].([]any)
			if len(els) > 10 {
				t.Errorf("context has %d elements", len(els))
			}
			for _, e := range els {
				if n := runeLen(text(e)); n > maxContextText || n == 0 {
					t.Errorf("context text %d chars", n)
				}
			}
		case "actions":
			for _, e := range blk["elements"].([]any) {
				m := e.(map[string]any)
				if n := runeLen(text(m["text"])); n > maxButtonText {
					t.Errorf("button text %d chars", n)
				}
				if n := runeLen(m["value"]); n > 2000 {
					t.Errorf("button value %d chars", n)
				}
			}
		}
	}
}

// wireJSON marshals v without HTML escaping, so the text reads as Slack shows it.
func wireJSON(t testing.TB, v any, indent string) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func runeLen(v any) int {
	s, _ := v.(string)
	return utf8.RuneCountInString(s)
}

// checkMarkup: Slack markup (<…>) may only be the dates tollgate writes itself.
func checkMarkup(t testing.TB, id, s string) {
	t.Helper()
	for rest := s; ; {
		i := strings.IndexByte(rest, '<')
		if i < 0 {
			break
		}
		if !strings.HasPrefix(rest[i:], "<!date^") {
			t.Errorf("block %s carries raw markup: %q", id, display.Text(rest[i:], 40))
			return
		}
		rest = rest[i+1:]
	}
	if strings.Count(s, "```")%2 != 0 {
		t.Errorf("block %s has an unbalanced code fence", id)
	}
}

func TestBlocksWithinSlackLimits(t *testing.T) {
	t.Parallel()
	for name, v := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, ok := v.([]string); ok {
				return // fallback texts: checked by the attack tests
			}
			checkLimits(t, v)
		})
	}
}

func TestRequestBlocksContent(t *testing.T) {
	t.Parallel()
	pending := RequestBlocks(goldenDomain(), goldenNow.Add(time.Minute))
	js := wireJSON(t, pending, "")
	for _, want := range []string{
		"register_domain", "web-bot", "team `web`", "claude-code 1.2.3 (session abc)", "domain: example.dev",
		"12.20 USD", "37.80 USD left of 50.00 USD", "autumn launch", "extension .dev is on the allowlist",
		"(in 29m)", "0 of 1", ActionIDApprove, ActionIDDeny, ActionIDFreeze, `"style":"primary"`, `"style":"danger"`,
		`"value":"apr_7f3kq2m5x9c4v8b6n1z0w3e5r7"`, "Irreversible",
	} {
		if !strings.Contains(string(js), want) {
			t.Errorf("pending message lacks %q", want)
		}
	}
	deploy := goldenDeploy()
	js = wireJSON(t, RequestBlocks(deploy, goldenNow), "")
	for _, want := range []string{"*Worker module* `worker.js`", deploy.Module.SHA256, "&lt;script&gt;&amp;amp;", ellipsis} {
		if !strings.Contains(string(js), want) {
			t.Errorf("deploy message lacks %q", want)
		}
	}
	for _, state := range []string{approvals.StateApproved, approvals.StateDenied, approvals.StateExpired, approvals.StateCancelled} {
		r := goldenDomain()
		r.State = state
		r.DecidedAt = goldenNow.Add(time.Minute)
		r.DecidedReason = "because"
		blocks := RequestBlocks(r, goldenNow.Add(time.Hour))
		js := wireJSON(t, blocks, "")
		if strings.Contains(string(js), `"type":"actions"`) {
			t.Errorf("%s message still has live buttons", state)
		}
		if !strings.Contains(string(js), BlockDecision) {
			t.Errorf("%s message lacks the decision", state)
		}
		checkLimits(t, blocks)
	}
	expired := goldenDomain()
	expired.State = approvals.StateExpired
	js = wireJSON(t, RequestBlocks(expired, goldenNow.Add(time.Hour)), "")
	if !strings.Contains(string(js), "Expired") || strings.Contains(strings.ToLower(string(js)), "denied") {
		t.Error("an expired request must read as expired, never denied")
	}
}

func TestLinesWithin(t *testing.T) {
	t.Parallel()
	if got := linesWithin("T", []string{"aaaa", "bbbb", "cccc"}, 50); got != "T\naaaa\nbbbb\ncccc" {
		t.Errorf("linesWithin = %q", got)
	}
	long := []string{strings.Repeat("a", 40), strings.Repeat("b", 40), strings.Repeat("c", 40)}
	if got := linesWithin("T", long, 100); !strings.HasSuffix(got, ellipsis+" and 2 more") || runeLen(got) > 100 {
		t.Errorf("linesWithin = %q", got)
	}
}

// FuzzRequestBlocks: whatever an agent puts in its arguments, reason, module
// or summary, the message stays within Slack's limits and carries no markup.
func FuzzRequestBlocks(f *testing.F) {
	f.Add("Register example.dev", "because", "domain", "example.dev", "export default {}", 1)
	f.Add("<!channel>", strings.Repeat("&<>", 2000), "a```b", "````", strings.Repeat("`", 9000), 3)
	f.Add("", "", "", "", "", 0)
	f.Add(strings.Repeat("é", 4000), "\xff\xfe", "<@U1>", "<https://evil|Approve>", "\u200b```", 2)
	f.Fuzz(func(t *testing.T, summary, reason, label, value, module string, votes int) {
		r := goldenDeploy()
		r.Summary, r.Reason, r.Agent = summary, reason, label
		r.Args = []approvals.Field{{Label: label, Value: value}}
		r.Module.FirstLines = module
		r.Policy = value
		r.Headroom = []string{value, reason}
		for i := range votes % 8 {
			r.Votes = append(r.Votes, approvals.Vote{Approver: label + fmt.Sprint(i), Via: approvals.ViaSlack, Outcome: approvals.OutcomeApprove, Reason: reason, At: goldenNow})
		}
		checkLimits(t, RequestBlocks(r, goldenNow))
		r.State = approvals.StateDenied
		r.DecidedReason = reason
		r.ResultText = reason
		checkLimits(t, RequestBlocks(r, goldenNow))
		checkLimits(t, DenyModal(r))
		if got := FallbackText(r); runeLen(got) > maxMessageText || !utf8.ValidString(got) || strings.ContainsAny(got, "\n\u202e\u200b") {
			t.Fatalf("fallback text %q is not one clean line within the limit", got)
		}
	})
}
