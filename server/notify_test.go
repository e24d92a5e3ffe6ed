package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tollgatehq/tollgate/ledger"
)

// progressLog collects the progress notifications a client received, per
// progress token, in the order they arrived.
type progressLog struct {
	mu      sync.Mutex
	byToken map[string][]*sdk.ProgressNotificationParams
	changed chan struct{}
}

func newProgressLog() *progressLog {
	return &progressLog{byToken: map[string][]*sdk.ProgressNotificationParams{}, changed: make(chan struct{}, 1)}
}

func (l *progressLog) handler(_ context.Context, r *sdk.ProgressNotificationClientRequest) {
	l.mu.Lock()
	k := fmt.Sprint(r.Params.ProgressToken)
	l.byToken[k] = append(l.byToken[k], r.Params)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// waitFinal waits until each token's last notification says the operation
// is in the final state its call returned (progress may trail the result on
// transports with a separate notification writer).
func (l *progressLog) waitFinal(t *testing.T, tokens, final []string) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		l.mu.Lock()
		missing := -1
		for i, tok := range tokens {
			got := l.byToken[tok]
			if len(got) == 0 || !strings.HasSuffix(got[len(got)-1].Message, " is "+final[i]) {
				missing = i
				break
			}
		}
		l.mu.Unlock()
		if missing < 0 {
			return
		}
		select {
		case <-l.changed:
		case <-deadline:
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("token %s never received the final %q progress: %s", tokens[missing], final[missing], progressString(l.byToken[tokens[missing]]))
		}
	}
}

func progressString(ps []*sdk.ProgressNotificationParams) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%v:%q", p.Progress, p.Message))
	}
	return strings.Join(parts, ", ")
}

// TestProgressIsOrderedOnEveryTransport makes 50 calls with a progress
// token over each transport and protocol version (4 at a time, in one
// session, with the client's standalone stream open where it has one) and
// requires strictly increasing progress per token, ending with the state the
// call returned. Over streamable HTTP, mcp-go alone delivered some of a
// request's progress on the GET stream and the rest on the POST stream, so
// clients saw 1, 3, 2, 4, and dropped the last one (see notify.go). The
// transports run one after the other: 250 deploys at once would test the
// machine, not the ordering.
func TestProgressIsOrderedOnEveryTransport(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ transport, version string }{
		{"streamable", ""}, // the newest: 2026-07-28, stateless
		{"streamable", "2025-11-25"},
		{"streamable", "2025-06-18"},
		{"sse", "2025-11-25"},
		{"stdio", "2025-11-25"},
	} {
		t.Run(tc.transport+"/"+orNewest(tc.version), func(t *testing.T) {
			e := newEnv(t, withQuietLogs())
			log := newProgressLog()
			s, _ := goSDKSession(t, e, tc.transport, tc.version, &sdk.ClientOptions{ProgressNotificationHandler: log.handler}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			const calls, parallel = 50, 4
			tokens := make([]string, calls)
			final := make([]string, calls) // the state each call returned
			sem := make(chan struct{}, parallel)
			var wg sync.WaitGroup
			for i := range calls {
				tokens[i] = fmt.Sprintf("%s-%s-%d", tc.transport, tc.version, i)
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					p := &sdk.CallToolParams{Name: "deploy_worker", Arguments: map[string]any{
						"script_name": fmt.Sprintf("web-order-%d", i), "module": okModule, "compatibility_date": "2025-01-01",
						"environment": "preview", "reason": reason,
					}}
					p.SetProgressToken(tokens[i])
					res, err := s.CallTool(ctx, p)
					if err != nil {
						t.Errorf("call %d: %v", i, err)
						return
					}
					raw, _ := json.Marshal(res.StructuredContent)
					var v struct{ Status string }
					_ = json.Unmarshal(raw, &v)
					final[i] = v.Status
				}()
			}
			wg.Wait()
			for i, st := range final {
				if !ledger.State(st).Terminal() {
					t.Fatalf("call %d returned %q, not a final state", i, st)
				}
			}
			log.waitFinal(t, tokens, final)
			log.mu.Lock()
			defer log.mu.Unlock()
			for _, tok := range tokens {
				got := log.byToken[tok]
				if len(got) < 2 {
					t.Errorf("%s: %d progress notifications, want at least the start and the end: %s", tok, len(got), progressString(got))
				}
				for j := 1; j < len(got); j++ {
					if got[j].Progress <= got[j-1].Progress {
						t.Errorf("%s: progress not strictly increasing: %s", tok, progressString(got))
						break
					}
				}
			}
		})
	}
}

func orNewest(v string) string {
	if v == "" {
		return "newest"
	}
	return v
}

// messageLog collects notifications/message a client received.
type messageLog struct {
	mu      sync.Mutex
	msgs    []*sdk.LoggingMessageParams
	changed chan struct{}
}

func newMessageLog() *messageLog { return &messageLog{changed: make(chan struct{}, 1)} }

func (l *messageLog) handler(_ context.Context, r *sdk.LoggingMessageRequest) {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Params)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// agentMsg is a received message with its data decoded.
type agentMsg struct {
	Level  string
	Logger string
	agentMessage
}

func (l *messageLog) all(t *testing.T) []agentMsg {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []agentMsg
	for _, m := range l.msgs {
		raw, _ := json.Marshal(m.Data)
		var d agentMessage
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("message data %s: %v", raw, err)
		}
		out = append(out, agentMsg{Level: string(m.Level), Logger: m.Logger, agentMessage: d})
	}
	return out
}

// wait waits for a message matching ok and returns it.
func (l *messageLog) wait(t *testing.T, what string, ok func(agentMsg) bool) agentMsg {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		for _, m := range l.all(t) {
			if ok(m) {
				return m
			}
		}
		select {
		case <-l.changed:
		case <-deadline:
			t.Fatalf("no %s message; got %+v", what, l.all(t))
		}
	}
}

func eventIs(event, opID string) func(agentMsg) bool {
	return func(m agentMsg) bool { return m.Event == event && (opID == "" || m.OperationID == opID) }
}

// TestAgentMessages: what the agent's user should see arrives as
// notifications/message at a sensible level, filtered by each session's
// logging/setLevel, and only to the agent concerned — including a freeze set
// by another process and an approval decided there.
func TestAgentMessages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ transport, version string }{
		{"streamable", "2025-11-25"},
		{"streamable", "2025-06-18"},
		{"sse", "2025-11-25"},
		{"stdio", "2025-11-25"},
	} {
		t.Run(tc.transport+"/"+tc.version, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			info := newMessageLog()
			s, _ := goSDKSession(t, e, tc.transport, tc.version, &sdk.ClientOptions{LoggingMessageHandler: info.handler}, nil)
			if err := s.SetLoggingLevel(ctx, &sdk.SetLoggingLevelParams{Level: "info"}); err != nil {
				t.Fatalf("logging/setLevel: %v", err)
			}
			if err := s.SetLoggingLevel(ctx, &sdk.SetLoggingLevelParams{Level: "loud"}); err == nil {
				t.Error("logging/setLevel accepted the level \"loud\"")
			}
			call := func(name string, args map[string]any) *sdk.CallToolResult {
				t.Helper()
				res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				return res
			}
			opOf := func(res *sdk.CallToolResult) string {
				raw, _ := json.Marshal(res.StructuredContent)
				var v struct {
					OperationID string `json:"operation_id"`
				}
				_ = json.Unmarshal(raw, &v)
				return v.OperationID
			}

			// A policy denial, with the policy's reason.
			denied := opOf(call("register_domain", map[string]any{"domain": "messages.xyz", "reason": reason}))
			m := info.wait(t, "policy denial", eventIs("policy_denied", denied))
			if m.Level != "warning" || m.Logger != loggerPolicy || !strings.Contains(m.Message, "xyz is not on the allowlist") {
				t.Errorf("policy denial message %+v", m)
			}

			// An approval requested, then decided (by another process's CLI
			// vote, which this server's loop picks up).
			waiting := opOf(call("register_domain", map[string]any{"domain": "messages.dev", "reason": reason}))
			m = info.wait(t, "approval request", eventIs("approval_requested", waiting))
			if m.Level != "notice" || !strings.Contains(m.Message, "waits for 1 human approver") {
				t.Errorf("approval request message %+v", m)
			}
			e.approve(waiting, "bob")
			m = info.wait(t, "approval decision", eventIs("approval_approved", waiting))
			if m.Level != "notice" || !strings.Contains(m.Message, "approved by bob") {
				t.Errorf("approval message %+v", m)
			}
			e.waitState(waiting, ledger.StateSucceeded)

			// A budget block names the budget.
			budget, _ := BudgetConfig{Scope: "agent:" + webBot, Window: "day", Limit: "1.00"}.Budget()
			if err := e.db.SetBudget(ctx, budget, "test"); err != nil {
				t.Fatal(err)
			}
			blocked := opOf(call("register_domain", map[string]any{"domain": "messages-blocked.dev", "reason": reason}))
			m = info.wait(t, "budget block", eventIs("blocked", blocked))
			if m.Level != "warning" || m.Logger != loggerBudget || !strings.Contains(m.Message, "agent:web-bot") {
				t.Errorf("budget block message %+v", m)
			}

			// A freeze set straight in the ledger, as the CLI does from
			// another process, reaches the frozen agent as an error.
			if _, err := Freeze(ctx, e.db, e.srv.Approvals(), ledger.AgentScope(webBot), "runaway loop", "cli:carol"); err != nil {
				t.Fatal(err)
			}
			m = info.wait(t, "freeze", eventIs("frozen", ""))
			if m.Level != "error" || m.Logger != loggerFreeze || !strings.Contains(m.Message, "runaway loop") {
				t.Errorf("freeze message %+v", m)
			}
			for _, got := range info.all(t) {
				if got.Event == "" || got.Message == "" {
					t.Errorf("message without an event or text: %+v", got)
				}
			}
		})
	}
}

// TestAgentMessagesRespectLevelAndAgent: a session that set no level hears
// only errors (mcp-go's default), and one agent never hears another's.
func TestAgentMessagesRespectLevelAndAgent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0; c.Auth = "tokens" }))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token := func(name, team string, roles ...string) map[string]string {
		tok, err := e.db.CreateAgent(ctx, ledger.Agent{Name: name, Team: team, Roles: roles}, time.Hour, "test")
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{"Authorization": "Bearer " + tok}
	}
	webHeaders := token(webBot, "web", "agent", "deployer")
	opsHeaders := token(opsBot, "ops", "agent")

	quiet := newMessageLog() // web-bot, no setLevel
	qs, _ := goSDKSession(t, e, "streamable", "2025-11-25", &sdk.ClientOptions{LoggingMessageHandler: quiet.handler}, webHeaders)
	other := newMessageLog() // ops-bot at debug: hears everything of its own
	ops, _ := goSDKSession(t, e, "streamable", "2025-11-25", &sdk.ClientOptions{LoggingMessageHandler: other.handler}, opsHeaders)
	if err := ops.SetLoggingLevel(ctx, &sdk.SetLoggingLevelParams{Level: "debug"}); err != nil {
		t.Fatal(err)
	}

	res, err := qs.CallTool(ctx, &sdk.CallToolParams{Name: "register_domain", Arguments: map[string]any{"domain": "quiet.xyz", "reason": reason}})
	if err != nil || !res.IsError {
		t.Fatalf("register quiet.xyz: %v %+v", err, res)
	}
	if _, err := Freeze(ctx, e.db, e.srv.Approvals(), ledger.AgentScope(webBot), "quiet please", "cli:carol"); err != nil {
		t.Fatal(err)
	}
	quiet.wait(t, "freeze", eventIs("frozen", ""))
	for _, m := range quiet.all(t) {
		if m.Level != "error" {
			t.Errorf("a session at the default level received a %s message: %+v", m.Level, m)
		}
	}
	// ops-bot is not frozen and did nothing: it must have heard nothing of web-bot's.
	if _, err := ops.CallTool(ctx, &sdk.CallToolParams{Name: "spend_status", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	for _, m := range other.all(t) {
		t.Errorf("ops-bot received a message meant for web-bot: %+v", m)
	}
}
