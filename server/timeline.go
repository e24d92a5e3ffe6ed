package server

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tollgatehq/tollgate/ledger"
)

// EventDetail is one line of an event's data for an operation's timeline
// (tollgate audit show, the console): the fields that tell the story. The
// caller sanitises it for display.
func EventDetail(e ledger.Event) string {
	var d map[string]any
	if json.Unmarshal(e.Data, &d) != nil {
		return ""
	}
	pick := func(keys ...string) string {
		var parts []string
		for _, k := range keys {
			if v, ok := d[k]; ok && v != nil && v != "" {
				parts = append(parts, fmt.Sprintf("%s=%v", k, v))
			}
		}
		return strings.Join(parts, " ")
	}
	switch e.Type {
	case "operation.state":
		return pick("from", "to", "code", "error")
	case "policy.decision":
		return pick("action", "resource", "allowed", "reasons")
	case "cloudflare.request":
		return pick("method", "path", "status", "cf_ray")
	case "token.minted", "token.revoked", "token.revoke_failed":
		return pick("token_id", "purpose", "expires_at", "error")
	case EventParentRotated, EventParentRotationFailed:
		return pick("token_id", "source", "scheduled", "error")
	case "rollout.step", "rollout.rolled_back", "rollout.resumed", "execution.succeeded", "execution.failed":
		return pick("summary", "error")
	case ledger.EventMandateUsed:
		return pick("mandate_id", "use", "count", "amount", "created_by")
	case ledger.EventMandateUseReturned:
		return pick("mandate_id", "amount", "code", "used", "used_amount")
	case "approval.mandate":
		return pick("mandate_id", "why")
	case "operation.withdrawn":
		return pick("approval_id", "reason")
	}
	b, _ := json.Marshal(d)
	return string(b)
}
