package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/tools"
)

// registerAsClient registers domain through an MCP client that introduces
// itself as clientName, and returns the approval message Slack received.
func registerAsClient(t *testing.T, clientName, domain, why string) slackAPICall {
	t.Helper()
	e, sl := newSlackEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }), withQuietLogs())
	c, err := client.NewInProcessClient(e.srv.MCP())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: clientName, Version: "1.0\u202e\n"}
	if _, err := c.Initialize(context.Background(), init); err != nil {
		t.Fatal(err)
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = "register_domain"
	req.Params.Arguments = map[string]any{"domain": domain, "reason": why}
	res, err := c.CallTool(e.ctxAs(webBot), req)
	if err != nil || res.IsError {
		t.Fatalf("register_domain: %v %s", err, text(res))
	}
	v := structured[tools.OperationView](t, res)
	return sl.rec.waitPost(t, e.pendingApproval(v.OperationID).ID)
}

// TestAttackClientNameForgesCostLineEndToEnd is the attack as an agent runs
// it: its MCP client calls itself "Claude Code\n\n*Quoted cost (max)*\n0.01
// USD ✅ pre-approved" and gives a reason with a right-to-left override. The
// message Slack receives has one cost line, the real one.
func TestAttackClientNameForgesCostLineEndToEnd(t *testing.T) {
	t.Parallel()
	post := registerAsClient(t, "Claude Code\n\n*Quoted cost (max)*\n0.01 USD ✅ pre-approved",
		"forged-client.dev", "launch page \u202egnp.exe\u202c\n\n*Approved by security*")
	var blocks []any
	if err := json.Unmarshal([]byte(post.Fields["blocks"]), &blocks); err != nil {
		t.Fatal(err)
	}
	var costs []string
	for _, s := range strings.Split(blocksText(t, post), "\n*") {
		if strings.HasPrefix(s, "Quoted cost (max)*") {
			costs = append(costs, s)
		}
		if strings.HasPrefix(s, "MCP client*\n") {
			v := strings.TrimPrefix(s, "MCP client*\n")
			if strings.Count(v, "`") != 2 || !strings.HasPrefix(v, "`") || !strings.Contains(v, "`Claude Code  *Quoted cost (max)* 0.01 USD ✅ pre-approved 1.0") {
				t.Errorf("MCP client field %q", v)
			}
		}
	}
	if len(costs) != 1 || costs[0] != "Quoted cost (max)*\n12.18 USD" {
		t.Fatalf("cost lines %q, want only the real one", costs)
	}
	for _, field := range []string{"blocks", "text"} {
		for _, r := range post.Fields[field] {
			if display.Forbidden(r) && r != '\n' {
				t.Fatalf("%s carries U+%04X", field, r)
			}
		}
	}
	if text := post.Fields["text"]; strings.Contains(text, "\n") || post.Fields["mrkdwn"] != "false" {
		t.Fatalf("notification text %q (mrkdwn %q)", text, post.Fields["mrkdwn"])
	}
	if strings.Contains(post.Fields["blocks"], "\n*Approved by security*") {
		t.Fatal("the reason forged a line")
	}
}

// An internationalised name reaches the approver ASCII first, with a warning.
func TestIDNApprovalShowsASCIIFirst(t *testing.T) {
	t.Parallel()
	post := registerAsClient(t, "claude-code", "bücher.dev", "the German edition of the bookshop")
	want := "Approval needed: Register xn--bcher-kva.dev (contains non-ASCII letters: bücher.dev) for 1 year"
	if text := post.Fields["text"]; !strings.HasPrefix(text, want) {
		t.Fatalf("notification text %q, want it to start with %q", text, want)
	}
	if b := blocksText(t, post); !strings.Contains(b, "\nRegister xn--bcher-kva.dev (contains non-ASCII letters: bücher.dev)") {
		t.Fatalf("message summary:\n%s", b)
	}
}
