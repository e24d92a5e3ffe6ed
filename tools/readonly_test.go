package tools

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// TestReadOnlyToolsRefuseBadInput drives each read-only tool's real MCP
// handler with bad arguments: every case is a tool error (isError) naming
// the argument, and none reaches the pipeline (the runner here only tells the
// time, so a call that got through would panic).
func TestReadOnlyToolsRefuseBadInput(t *testing.T) {
	t.Parallel()
	cfg := Config{}.withDefaults()
	r := clockOnly{}
	byName := map[string]Tool{}
	for _, tl := range []Tool{CheckDomain(r), GetOperation(r), ListOperations(r), SpendStatus(r), EstimateCost(r, cfg)} {
		byName[tl.Tool.Name] = tl
	}
	cases := []struct {
		tool, args string
		want       []string
	}{
		{"check_domain", `{}`, []string{"domain: is required"}},
		{"check_domain", `{"domain":7}`, []string{"domain: got a number", "a string"}},
		{"check_domain", `{"domain":"example.dev","price":1}`, []string{"price: unknown argument", "Allowed: domain"}},
		{"check_domain", `{"domain":"gооgle.com"}`, []string{"domain:", "mixes Latin and Cyrillic"}},
		{"check_domain", `{"domain":"co.uk"}`, []string{"public suffix itself"}},
		{"check_domain", `"example.dev"`, []string{"arguments must be a JSON object"}},
		{"get_operation", `{}`, []string{"operation_id: is required"}},
		{"get_operation", `{"operation_id":"12"}`, []string{"operation_id:", "not an operation id"}},
		{"get_operation", `{"operation_id":"op_abc","wait_seconds":51}`, []string{"wait_seconds: 51 is out of range", "0 to 50"}},
		{"get_operation", `{"operation_id":"op_abc","wait_seconds":-1}`, []string{"wait_seconds: -1 is out of range"}},
		{"get_operation", `{"operation_id":"op_abc","wait_seconds":"10"}`, []string{"wait_seconds: got a string"}},
		{"list_operations", `{"limit":0}`, []string{"limit: 0 is out of range", "1 to 100"}},
		{"list_operations", `{"limit":101}`, []string{"limit: 101 is out of range"}},
		{"list_operations", `{"status":"done"}`, []string{"status:", "is not a state"}},
		{"list_operations", `{"cursor":"` + strings.Repeat("c", 201) + `"}`, []string{"cursor: is too long"}},
		{"list_operations", `{"agent":"someone-else"}`, []string{"agent: unknown argument"}},
		{"spend_status", `{"agent":"someone-else"}`, []string{"agent: unknown argument"}},
		{"estimate_cost", `{"action":"register_domain","params":"example.dev"}`, []string{"params.", "arguments must be a JSON object"}},
	}
	for _, tc := range cases {
		t.Run(tc.tool+" "+tc.args, func(t *testing.T) {
			t.Parallel()
			req := mcp.CallToolRequest{}
			req.Params.Name = tc.tool
			req.Params.RawArguments = json.RawMessage(tc.args)
			res, err := byName[tc.tool].Handler(context.Background(), req)
			if err != nil {
				t.Fatalf("bad input must be a tool result, not a Go error: %v", err)
			}
			if !res.IsError {
				t.Fatalf("accepted %s", tc.args)
			}
			text := res.Content[0].(mcp.TextContent).Text
			for _, want := range tc.want {
				if !strings.Contains(text, want) {
					t.Errorf("error %q does not contain %q", text, want)
				}
			}
		})
	}
}

// clockOnly is a Runner that can only tell the time.
type clockOnly struct{ Runner }

func (clockOnly) Now() time.Time { return testNow }
