package tools

import (
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

// TestOperationLink: a mutating call's result links to its operation's
// resource, for clients whose protocol has resource_link content.
func TestOperationLink(t *testing.T) {
	t.Parallel()
	l := operationLink(OperationView{OperationID: "op_abc", Status: "awaiting_approval"})
	if l.Type != "resource_link" || l.URI != "tollgate://operations/op_abc" || l.MIMEType != "application/json" || l.Name == "" || l.Description == "" {
		t.Fatalf("link %+v", l)
	}
	for v, want := range map[string]bool{
		"": true, mcp.ProtocolVersion20260728: true, mcp.ProtocolVersion20251125: true, mcp.ProtocolVersion20250618: true,
		mcp.ProtocolVersion20250326: false, mcp.ProtocolVersion20241105: false,
	} {
		if linksAllowed(v) != want {
			t.Errorf("linksAllowed(%q) = %v", v, !want)
		}
	}
}
